//! The four C string functions littlefs's `lfs.c` links against. The target has no libc, and
//! littlefs2's `c-stubs` feature covers only `strcpy` (research/rp2040.md §4), so they are
//! written here. They are called only by lfs.c, with NUL-terminated strings it built itself.

use core::ffi::c_char;

/// Whether `set` (NUL-terminated) contains `ch`.
///
/// # Safety
/// `set` must point to a NUL-terminated string.
unsafe fn contains(set: *const c_char, ch: c_char) -> bool {
    let mut p = set;
    // SAFETY: the caller guarantees a NUL terminator, so every read stays inside the string.
    unsafe {
        while *p != 0 {
            if *p == ch {
                return true;
            }
            p = p.add(1);
        }
    }
    false
}

/// # Safety
/// `s` must point to a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn strchr(s: *const c_char, c: i32) -> *mut c_char {
    let mut p = s;
    // SAFETY: lfs.c passes NUL-terminated strings; the loop stops at the terminator (which C's
    // strchr also matches when c == 0).
    unsafe {
        loop {
            if *p == c as u8 {
                return p as *mut c_char;
            }
            if *p == 0 {
                return core::ptr::null_mut();
            }
            p = p.add(1);
        }
    }
}

/// # Safety
/// `s` and `accept` must point to NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn strspn(s: *const c_char, accept: *const c_char) -> usize {
    let mut n = 0;
    // SAFETY: both strings are NUL-terminated; `contains(_, 0)` is false, so we stop at s's end.
    unsafe {
        while *s.add(n) != 0 && contains(accept, *s.add(n)) {
            n += 1;
        }
    }
    n
}

/// # Safety
/// `s` and `reject` must point to NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn strcspn(s: *const c_char, reject: *const c_char) -> usize {
    let mut n = 0;
    // SAFETY: both strings are NUL-terminated; the loop stops at s's terminator.
    unsafe {
        while *s.add(n) != 0 && !contains(reject, *s.add(n)) {
            n += 1;
        }
    }
    n
}

/// # Safety
/// `src` must be NUL-terminated and `dst` large enough for it, terminator included.
#[no_mangle]
pub unsafe extern "C" fn strcpy(dst: *mut c_char, src: *const c_char) -> *mut c_char {
    let mut i = 0;
    // SAFETY: the caller guarantees `dst` holds `strlen(src) + 1` bytes; the NUL is copied too.
    unsafe {
        loop {
            let c = *src.add(i);
            *dst.add(i) = c;
            if c == 0 {
                return dst;
            }
            i += 1;
        }
    }
}
