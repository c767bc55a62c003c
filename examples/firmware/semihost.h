/* ARM semihosting (the debugger or QEMU does the I/O for the firmware): the few calls the
   harness needs. Under QEMU: -semihosting-config enable=on,target=native,arg=... */
#ifndef SEMIHOST_H
#define SEMIHOST_H
#include <stdint.h>

int sh_open(const char *path, int mode); /* mode 0: "r", 1: "rb", 4: "w", 5: "wb" */
int sh_read(int fd, void *buf, uint32_t len); /* bytes read, 0 at the end of the file */
int sh_write(int fd, const void *buf, uint32_t len); /* 0 when all was written */
int sh_close(int fd);
void sh_write0(const char *s); /* to the console (QEMU's stdout or stderr) */
int sh_cmdline(char *buf, uint32_t len); /* the arg=... words, separated by spaces */
void sh_exit(int status) __attribute__((noreturn));

/* GCC writes Thumb-1 code (Cortex-M0) in the "divided" assembler syntax: inline assembly
   written in the unified syntax switches to it and back. */
#if defined(__thumb2__)
#define ASM_UNIFIED(text) text
#else
#define ASM_UNIFIED(text) ".syntax unified\n" text ".syntax divided\n"
#endif

#endif
