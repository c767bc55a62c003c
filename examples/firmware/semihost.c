/* ARM semihosting calls: r0 = operation, r1 = argument block, BKPT 0xAB on M-profile cores. */
#include "semihost.h"

static int call(int op, void *arg) {
    register int r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static uint32_t length(const char *s) {
    uint32_t n = 0;
    while (s[n]) n++;
    return n;
}

int sh_open(const char *path, int mode) {
    uint32_t arg[3] = {(uint32_t)path, (uint32_t)mode, length(path)};
    return call(0x01, arg);
}

int sh_read(int fd, void *buf, uint32_t len) {
    uint32_t arg[3] = {(uint32_t)fd, (uint32_t)buf, len};
    return (int)(len - (uint32_t)call(0x06, arg)); /* the call returns the bytes NOT read */
}

int sh_write(int fd, const void *buf, uint32_t len) {
    uint32_t arg[3] = {(uint32_t)fd, (uint32_t)buf, len};
    return call(0x05, arg);
}

int sh_close(int fd) {
    uint32_t arg[1] = {(uint32_t)fd};
    return call(0x02, arg);
}

void sh_write0(const char *s) { call(0x04, (void *)s); }

int sh_cmdline(char *buf, uint32_t len) {
    uint32_t arg[2] = {(uint32_t)buf, len};
    return call(0x15, arg);
}

void sh_exit(int status) {
    /* SYS_EXIT_EXTENDED: reason ADP_Stopped_ApplicationExit with an exit status */
    uint32_t arg[2] = {0x20026u, (uint32_t)status};
    call(0x20, arg);
    for (;;) {
    }
}
