//! The few peripherals of QEMU's mps2-an386 the lane node uses, by register: the CMSDK APB
//! UART0 (the RS-485 line), the CMSDK APB Timer0 (a free-running 25 MHz clock) and the
//! semihosting file calls that stand in for the converters (raw samples from a host file).
//!
//! Register map from QEMU's `hw/char/cmsdk-apb-uart.c`, `hw/timer/cmsdk-apb-timer.c` and
//! `hw/arm/mps2.c`.

use core::ptr::{read_volatile, write_volatile};

/// The system clock of the MPS2 boards, which clocks SysTick and the APB timers.
pub const SYSCLK_HZ: u32 = 25_000_000;

fn reg(base: usize, offset: usize) -> *mut u32 {
    (base + offset) as *mut u32
}

fn read(base: usize, offset: usize) -> u32 {
    // SAFETY: `base + offset` is a register of a CMSDK peripheral that the mps2-an386 maps at
    // this address; a volatile 32-bit read has no side effect but the device's own.
    unsafe { read_volatile(reg(base, offset)) }
}

fn write(base: usize, offset: usize, value: u32) {
    // SAFETY: as in `read`; the values written are those the CMSDK documentation allows.
    unsafe { write_volatile(reg(base, offset), value) }
}

/// CMSDK APB UART. Polled: at 2 kHz the main loop visits it far more often than bytes come.
pub struct Uart {
    base: usize,
}

impl Uart {
    const DATA: usize = 0x00;
    const STATE: usize = 0x04;
    const CTRL: usize = 0x08;
    const BAUDDIV: usize = 0x10;
    const TX_FULL: u32 = 1 << 0;
    const RX_FULL: u32 = 1 << 1;

    /// UART0, the lane bus.
    pub fn uart0() -> Uart {
        let u = Uart { base: 0x4000_4000 };
        // 25 MHz / 217 ≈ 115 200 baud (QEMU ignores the rate but refuses dividers under 16).
        write(u.base, Self::BAUDDIV, 217);
        write(u.base, Self::CTRL, 0b11); // TX and RX enabled, no interrupts
        u
    }

    pub fn write_all(&mut self, bytes: &[u8]) {
        for b in bytes {
            while read(self.base, Self::STATE) & Self::TX_FULL != 0 {}
            write(self.base, Self::DATA, *b as u32);
        }
    }

    pub fn read_byte(&mut self) -> Option<u8> {
        (read(self.base, Self::STATE) & Self::RX_FULL != 0)
            .then(|| read(self.base, Self::DATA) as u8)
    }
}

/// CMSDK APB Timer0 counting down from 2^32 − 1 at the system clock, read into a 64-bit
/// count of cycles since start. It is read at every sample, far more often than it wraps
/// (every 171 s), so no wrap is missed. SysTick only wakes the core; this says the time.
pub struct Clock {
    last: u32,
    cycles: u64,
}

impl Clock {
    const BASE: usize = 0x4000_0000;
    const CTRL: usize = 0x00;
    const VALUE: usize = 0x04;
    const RELOAD: usize = 0x08;

    pub fn start() -> Clock {
        write(Self::BASE, Self::CTRL, 0);
        write(Self::BASE, Self::RELOAD, u32::MAX);
        write(Self::BASE, Self::VALUE, u32::MAX);
        write(Self::BASE, Self::CTRL, 1);
        Clock {
            last: read(Self::BASE, Self::VALUE),
            cycles: 0,
        }
    }
}

impl lane_node_hal::Clock for Clock {
    const HZ: u32 = SYSCLK_HZ;

    fn ticks(&mut self) -> u64 {
        let v = read(Self::BASE, Self::VALUE);
        self.cycles += self.last.wrapping_sub(v) as u64;
        self.last = v;
        self.cycles
    }
}

/// A host file read through semihosting (QEMU `-semihosting-config enable=on`), relative to
/// QEMU's working directory.
pub struct HostFile {
    fd: usize,
}

impl HostFile {
    /// `name` must end in a NUL byte.
    pub fn open(name: &[u8]) -> Option<HostFile> {
        debug_assert_eq!(name.last(), Some(&0));
        // SAFETY: SYS_OPEN reads `name.len() - 1` bytes from a live, NUL-terminated buffer;
        // mode 1 is "rb".
        let fd =
            unsafe { cortex_m_semihosting::syscall!(OPEN, name.as_ptr(), 1usize, name.len() - 1) };
        (fd as isize != -1).then_some(HostFile { fd })
    }

    /// Fills as much of `buf` as the file has; returns how many bytes.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        // SAFETY: SYS_READ writes at most `buf.len()` bytes into `buf`, which lives across
        // the call; it returns how many were *not* read.
        let left =
            unsafe { cortex_m_semihosting::syscall!(READ, self.fd, buf.as_mut_ptr(), buf.len()) };
        buf.len() - left.min(buf.len())
    }
}

impl Drop for HostFile {
    fn drop(&mut self) {
        // SAFETY: closes a handle SYS_OPEN gave and nothing else uses.
        unsafe {
            cortex_m_semihosting::syscall!(CLOSE, self.fd);
        }
    }
}

/// Stack use, measured the usual way: the free stack is painted with a pattern at start, and
/// at the end the deepest word no longer holding it says how far the stack grew.
pub mod stack {
    use core::ptr::{read_volatile, write_volatile};

    const PAINT: u32 = 0xDEAD_BEEF;
    /// How far below the top of RAM the stack is watched.
    const WATCHED: usize = 64 * 1024;

    fn top() -> usize {
        extern "C" {
            // Defined by cortex-m-rt's `link.x`: the initial stack pointer.
            static _stack_start: u32;
        }
        // Only the symbol's address is taken; it is never read.
        core::ptr::addr_of!(_stack_start) as usize
    }

    /// Paints the stack below the current frame (call first thing in `main`).
    pub fn paint() {
        let sp = cortex_m::register::msp::read() as usize;
        let mut p = top() - WATCHED;
        while p < sp - 256 {
            // SAFETY: `[top − 64 KiB, sp − 256)` is RAM the stack has not reached yet (the
            // 4 MiB RAM holds nothing else that high), so no live value is overwritten.
            unsafe { write_volatile(p as *mut u32, PAINT) };
            p += 4;
        }
    }

    /// Bytes of stack used at the deepest point since [`paint`].
    pub fn peak() -> usize {
        let mut p = top() - WATCHED;
        // SAFETY: reads words of RAM inside the watched region.
        while p < top() && unsafe { read_volatile(p as *const u32) } == PAINT {
            p += 4;
        }
        top() - p
    }
}
