/* Test harness: runs an exported model on images read from a file through semihosting and
   prints one class per image, then timing and memory figures.

   Build with -DMODEL=name -DMODEL_UPPER=NAME (the names given to `bitnn export --name`).
   Run (QEMU): -semihosting-config enable=on,target=native,arg=firmware,arg=IMAGES[,arg=f32]
   IMAGES holds NAME_FEATURES bytes per image (or float32 values with f32). Output lines:
     P <classes, one digit per image>          (in chunks)
     T <images> <SysTick ticks in predict, summed> <ticks of an empty measurement>
       <ticks of a calibration loop of 2,000,000 instructions>
     S <stack high-water mark, bytes>
   The instruction count per inference is (ticks - images * empty) / images / (calibration
   ticks / 2,000,000): with QEMU's -icount the SysTick advances with executed instructions. */
#include <stdint.h>
#include "semihost.h"

#define STR_(x) #x
#define STR(x) STR_(x)
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#include STR(MODEL.h)

#define FEATURES CAT(MODEL_UPPER, _FEATURES)
#define WORK_WORDS CAT(MODEL_UPPER, _WORK_WORDS)

extern volatile uint32_t systick_wraps;
uint32_t stack_high_water(void);

#define SYST_CSR (*(volatile uint32_t *)0xe000e010u)
#define SYST_RVR (*(volatile uint32_t *)0xe000e014u)
#define SYST_CVR (*(volatile uint32_t *)0xe000e018u)

static uint32_t now(void) { /* SysTick ticks since start, counting the 24-bit wraps */
    uint32_t w, v;
    do {
        w = systick_wraps;
        v = SYST_CVR;
    } while (w != systick_wraps);
    return (w << 24) + (0xffffffu - v);
}

static void spin(uint32_t n) { /* exactly 2 instructions per iteration */
    __asm__ volatile(ASM_UNIFIED("1: subs %0, %0, #1\n bne 1b\n") : "+l"(n) : : "cc");
}

static char *put_uint(char *p, uint32_t v) {
    char tmp[10];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v);
    while (n) *p++ = tmp[--n];
    return p;
}

static uint32_t work[WORK_WORDS];
#ifdef HARNESS_F32
static float image[FEATURES];
#define PREDICT CAT(MODEL, _predict_f32)
#else
static uint8_t image[FEATURES];
#define PREDICT CAT(MODEL, _predict_u8)
#endif

int main(void) {
    char line[72], *args = line, *path = 0;
    SYST_RVR = 0xffffffu;
    SYST_CVR = 0;
    SYST_CSR = 7; /* processor clock, interrupt on wrap, enable */
#ifdef HARNESS_F32
#if defined(__ARM_FP)
    uint32_t fpscr; /* flush subnormals to zero: the float path must not depend on them */
    __asm__ volatile("vmrs %0, fpscr" : "=r"(fpscr));
    fpscr |= 1u << 24;
    __asm__ volatile("vmsr fpscr, %0" : : "r"(fpscr));
#endif
#endif
    if (sh_cmdline(line, sizeof line) != 0) {
        sh_write0("command line too long: give the images file by a short (relative) path\n");
        return 2;
    }
    for (char *p = line; *p; p++) /* the second word is the path of the images */
        if (*p == ' ') {
            *p = 0;
            if (!path) path = p + 1;
        }
    (void)args;
    int fd = path ? sh_open(path, 1) : -1;
    if (fd < 0) {
        sh_write0("cannot open the images file\n");
        return 2;
    }
    uint32_t images = 0, ticks = 0;
    char out[72];
    char *o = out + 2;
    out[0] = 'P';
    out[1] = ' ';
    while (sh_read(fd, image, sizeof image) == (int)sizeof image) {
        uint32_t t0 = now();
        int c = PREDICT(image, work);
        ticks += now() - t0;
        images++;
        *o++ = (char)('0' + c);
        if (o - out >= 64) {
            *o++ = '\n';
            *o = 0;
            sh_write0(out);
            o = out + 2;
        }
    }
    sh_close(fd);
    if (o > out + 2) {
        *o++ = '\n';
        *o = 0;
        sh_write0(out);
    }
    uint32_t t0 = now();
    uint32_t empty = now() - t0;
    t0 = now();
    spin(1000);
    uint32_t spin_short = now() - t0;
    t0 = now();
    spin(1001000);
    uint32_t calib = now() - t0 - spin_short;
    o = out;
    *o++ = 'T';
    const uint32_t figures[4] = {images, ticks, empty, calib};
    for (int i = 0; i < 4; i++) {
        *o++ = ' ';
        o = put_uint(o, figures[i]);
    }
    *o++ = '\n';
    *o++ = 'S';
    *o++ = ' ';
    o = put_uint(o, stack_high_water());
    *o++ = '\n';
    *o = 0;
    sh_write0(out);
    return 0;
}
