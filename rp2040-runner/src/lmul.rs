//! `__aeabi_lmul`, the 64-bit multiplication the compiler calls for every `u64 * u64`: p256's
//! field arithmetic (crypto-bigint) spends ~45 % of a signature in it, once per 32 × 32 → 64-bit
//! limb product, because ARMv6-M has no long multiply.
//!
//! compiler-builtins' version (generic Rust) takes ~45 cycles a call, spilling to the stack.
//! This one keeps everything in registers: the low halves' product from four 16 × 16-bit
//! products, the cross terms' low words added to the high word; ~32 cycles. It has no branch and
//! no memory access besides the stack, and the RP2040's MULS takes one cycle whatever its
//! operands, so its time does not depend on the numbers (as the compiler's, which secret-
//! dependent field arithmetic relies on). emulator/test/lmul.test.mjs holds it to the exact
//! product, modulo 2^64, on edge cases and random operands, in the firmware as linked.
//!
//! In: r1:r0 = a, r3:r2 = b (AAPCS, low word first). Out: r1:r0 = a × b mod 2^64.

core::arch::global_asm!(
    ".section .text.__aeabi_lmul, \"ax\", %progbits",
    ".global __aeabi_lmul",
    ".type __aeabi_lmul, %function",
    ".thumb_func",
    "__aeabi_lmul:",
    "push {{r4, r5, r6, lr}}",
    // The cross terms: only their low words reach the result's high word.
    "muls r1, r2",     // a_hi * b_lo
    "muls r3, r0",     // b_hi * a_lo
    "adds r6, r1, r3", // cross = their sum mod 2^32
    // a_lo * b_lo from its 16-bit halves: a_lo = ah:al, b_lo = bh:bl.
    "lsrs r4, r0, #16", // ah
    "lsrs r5, r2, #16", // bh
    "uxth r0, r0",      // al
    "uxth r2, r2",      // bl
    "movs r1, r4",
    "muls r1, r5",     // hi = ah * bh
    "muls r5, r0",     // mid1 = bh * al
    "muls r4, r2",     // mid2 = ah * bl
    "muls r0, r2",     // lo = al * bl
    "adds r5, r5, r4", // mid = mid1 + mid2, its carry (bit 32) in C
    "movs r4, #0",     // (MOVS leaves C as it is)
    "adcs r4, r4",     // r4 = carry
    "lsls r4, r4, #16",
    "adds r1, r1, r4", // hi += carry << 16
    "lsls r4, r5, #16",
    "lsrs r5, r5, #16",
    "adds r0, r0, r4", // lo += mid << 16, carry in C
    "adcs r1, r5",     // hi += mid >> 16 + carry
    "adds r1, r1, r6", // hi += cross
    "pop {{r4, r5, r6, pc}}",
    ".size __aeabi_lmul, . - __aeabi_lmul",
);
