/* Startup for Cortex-M0 and Cortex-M4: the vector table, the reset handler (copy .data, clear
   .bss, paint the stack to measure its high-water mark, enable the FPU where there is one),
   a SysTick counter for timing, and fault handlers that end the run with an error. */
#include <stdint.h>
#include "semihost.h"

extern uint32_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[];
extern uint32_t __stack_bottom[], __stack_top[];
int main(void);

#define STACK_PAINT 0xa5a5a5a5u
volatile uint32_t systick_wraps;

void Reset_Handler(void) __attribute__((noreturn, naked));
static void start(void) __attribute__((noreturn, used));

void Reset_Handler(void) {
    /* paint the stack below the current SP before anything uses it */
    __asm__ volatile(ASM_UNIFIED(
        "ldr r0, =__stack_bottom\n"
        "mov r1, sp\n"
        "ldr r2, =0xa5a5a5a5\n"
        "1: cmp r0, r1\n"
        "bhs 2f\n"
        "str r2, [r0]\n"
        "adds r0, r0, #4\n"
        "b 1b\n"
        "2: ldr r3, =start\n"
        "bx r3\n"));
}

static void start(void) {
    volatile uint32_t *src = __data_load, *dst = __data_start; /* volatile: no memcpy call */
    while (dst < __data_end) *dst++ = *src++;
    for (volatile uint32_t *p = __bss_start; p < __bss_end; p++) *p = 0;
#if defined(__ARM_FP)
    *(volatile uint32_t *)0xe000ed88u |= 0xfu << 20; /* CPACR: full access to CP10, CP11 */
    __asm__ volatile("dsb\n isb");
#endif
    sh_exit(main());
}

uint32_t stack_high_water(void) { /* bytes of stack ever used */
    const uint32_t *p = __stack_bottom;
    while (p < __stack_top && *p == STACK_PAINT) p++;
    return (uint32_t)((const char *)__stack_top - (const char *)p);
}

static void fault(void) {
    sh_write0("fault\n");
    sh_exit(3);
}

void SysTick_Handler(void) { systick_wraps++; }

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))__stack_top, Reset_Handler, fault, fault, fault, fault, fault, 0, 0, 0, 0,
    fault, fault, 0, fault, SysTick_Handler,
};
