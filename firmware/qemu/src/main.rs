//! The lane-node firmware on QEMU's mps2-an386 (Cortex-M4F).
//!
//! - **Settings** from `node.cfg` and **samples** from `raw.bin` (the raw-sample trace of
//!   `lane_node_core::raw`), both read from QEMU's working directory through semihosting:
//!   they stand in for the configuration flash and the converters. A QEMU UART takes about
//!   8 kB/s, far too slow for 4 channels at 2 kHz; semihosting reads megabytes a second.
//! - **Real time**: SysTick interrupts at the sample rate and the core sleeps in `WFI`
//!   between samples; which sample is due comes from the free-running Timer0, so a late main
//!   loop is seen. Up to [`BACKLOG`] late samples are caught up (the converter's FIFO on a
//!   real board); beyond that they are dropped, counted, and reported in `Status`.
//! - **UART0 is the RS-485 line**: frames out, commands in (barrier, lights).
//! - **Exit** through semihosting: 0 when the trace has been played to its end, 1 on bad
//!   settings, a bad trace, a panic or a hard fault, so a test or a harness sees it.
#![no_std]
#![no_main]

mod board;
mod trace;

use acsgd_drivers::lane::{self, Receiver};
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception, ExceptionFrame};
use cortex_m_semihosting::{debug, hprintln};
use lane_node_core::{Config, Frames, Node, Sample};
use lane_node_hal::{Clock as _, LoadCellAdc, PeriodCounter};
use panic_semihosting as _;

use board::{Clock, HostFile, Uart, SYSCLK_HZ};
use trace::TraceSource;

/// Samples the node may fall behind by before it drops them: half a second, the depth of the
/// converter FIFO and DMA ring a real board would read them from (16 KiB). QEMU runs on a
/// host that may be busy; this is its slack.
const BACKLOG: u64 = 1024;
/// Settings larger than this are refused.
const MAX_CFG: usize = 4096;

#[entry]
fn main() -> ! {
    match run() {
        Ok(()) => debug::exit(debug::EXIT_SUCCESS),
        Err(why) => {
            hprintln!("lane-node: {}", why);
            debug::exit(debug::EXIT_FAILURE);
        }
    }
    loop {
        cortex_m::asm::wfi();
    }
}

/// The next sample from the converters, or `None` at the end of the trace.
fn next_sample(src: &mut TraceSource) -> Option<Sample> {
    let cells = src.sample().ok()??;
    let loops = src.gate().ok()?;
    Some(Sample { cells, loops })
}

fn run() -> Result<(), &'static str> {
    board::stack::paint();
    let mut cfg_bytes = [0u8; MAX_CFG];
    let cfg = match HostFile::open(b"node.cfg\0") {
        Some(mut f) => {
            let n = f.read(&mut cfg_bytes);
            if n == MAX_CFG {
                return Err("node.cfg: larger than 4 KiB");
            }
            let text = core::str::from_utf8(&cfg_bytes[..n]).map_err(|_| "node.cfg: not UTF-8")?;
            match Config::parse(text) {
                Ok(c) => c,
                Err(e) => {
                    hprintln!("lane-node: node.cfg: {}", e);
                    return Err("bad settings");
                }
            }
        }
        None => Config::default(),
    };
    let mut source = TraceSource::open(b"raw.bin\0")?;
    let h = source.header;
    if h.sample_hz != cfg.sample_hz || h.gate_ticks != cfg.gate_ticks {
        return Err("raw.bin: sample rate or gate differs from node.cfg");
    }

    let mut uart = Uart::uart0();
    let mut rx = Receiver::new();
    let mut node = Node::new(cfg);
    // 24 V supply, 21.5 °C: the model has no sensors for them.
    node.set_board(24_000, 215, 0, 0);
    let mut out = Frames::new();
    let mut wire = [0u8; lane::MAX_FRAME];
    let mut frames_sent: u32 = 0;

    let cycles_per_sample = (SYSCLK_HZ / h.sample_hz) as u64;
    let mut cp = cortex_m::Peripherals::take().ok_or("peripherals taken twice")?;
    cp.SYST.set_clock_source(SystClkSource::Core);
    cp.SYST.set_reload(SYSCLK_HZ / h.sample_hz - 1);
    cp.SYST.clear_current();
    let mut clock = Clock::start();
    cp.SYST.enable_counter();
    cp.SYST.enable_interrupt();

    let mut taken: u64 = 0;
    let mut dropped: u64 = 0;
    'play: loop {
        let due = clock.ticks() / cycles_per_sample + 1;
        if taken >= due {
            cortex_m::asm::wfi();
            continue;
        }
        if due - taken > BACKLOG {
            let lost = due - taken - BACKLOG;
            for _ in 0..lost {
                if next_sample(&mut source).is_none() {
                    break 'play;
                }
            }
            node.dropped(lost as u32);
            dropped += lost;
            taken += lost;
        }
        while let Some(b) = uart.read_byte() {
            if let Some(f) = rx.push(b) {
                node.command(&f, &mut out);
            }
        }
        node.set_board(24_000, 215, 0, rx.errors.min(u16::MAX as u32) as u16);
        let Some(s) = next_sample(&mut source) else {
            break;
        };
        node.step(&s, &mut out);
        taken += 1;
        for f in out.as_slice() {
            if let Ok(n) = lane::encode(f, &mut wire) {
                uart.write_all(&wire[..n]);
                frames_sent += 1;
            }
        }
        out.clear();
    }
    cp.SYST.disable_interrupt();
    node.status(&mut out);
    for f in out.as_slice() {
        if let Ok(n) = lane::encode(f, &mut wire) {
            uart.write_all(&wire[..n]);
            frames_sent += 1;
        }
    }
    hprintln!(
        "lane-node: {} samples, {} dropped, {} frames sent, {} bad frames received, stack peak {} bytes",
        node.ticks(),
        dropped,
        frames_sent,
        rx.errors,
        board::stack::peak()
    );
    Ok(())
}

#[exception]
fn SysTick() {
    // Only wakes the main loop from WFI; Timer0 says which sample is due.
}

#[exception]
unsafe fn HardFault(ef: &ExceptionFrame) -> ! {
    hprintln!("lane-node: hard fault at {:#010x}", ef.pc());
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
