//! iet's eBPF programs. Entry points are thin; the work is in `try_*`.
#![no_std]
#![no_main]

mod maps;
mod sk_msg;
mod sock_ops;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
