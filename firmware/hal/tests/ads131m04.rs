//! The ADS131M04 driver against scripted SPI and pin transactions: every byte the driver puts
//! on the bus is the one the data sheet's frame format requires, and `done()` proves nothing
//! expected was left out.

use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as Pin};
use embedded_hal_mock::eh1::spi::{Mock as SpiMock, Transaction as Spi};
use lane_node_hal::ads131m04::{command, register, Ads131m04, Error, Osr, FRAME};
use lane_node_hal::LoadCellAdc;

/// A frame out (its first words' upper 16 bits) and the frame back.
fn frame(out_words: &[u16], back: [u8; FRAME]) -> Vec<Spi<u8>> {
    let mut out = vec![0u8; FRAME];
    for (i, w) in out_words.iter().enumerate() {
        out[3 * i..3 * i + 2].copy_from_slice(&w.to_be_bytes());
    }
    vec![
        Spi::transaction_start(),
        Spi::transfer_in_place(out, back.to_vec()),
        Spi::transaction_end(),
    ]
}

/// A frame back whose response word is `r` and whose channels are `ch` (24-bit words).
fn back(r: u16, ch: [[u8; 3]; 4]) -> [u8; FRAME] {
    let mut b = [0u8; FRAME];
    b[..2].copy_from_slice(&r.to_be_bytes());
    for (c, w) in ch.iter().enumerate() {
        b[3 + 3 * c..6 + 3 * c].copy_from_slice(w);
    }
    b[15..].copy_from_slice(&[0xAB, 0xCD, 0x00]); // CRC word, not checked here
    b
}

const ZERO: [[u8; 3]; 4] = [[0; 3]; 4];

#[test]
fn reset_is_acknowledged_with_ff24() {
    let spi = [
        frame(&[command::RESET], back(0, ZERO)),
        frame(&[command::NULL], back(0xFF24, ZERO)),
    ]
    .concat();
    let mut adc = Ads131m04::new(SpiMock::new(&spi), PinMock::new(&[]));
    adc.reset().unwrap();
    let (mut spi, mut pin) = adc.destroy();
    spi.done();
    pin.done();
}

#[test]
fn a_reset_answered_otherwise_is_an_error() {
    let spi = [
        frame(&[command::RESET], back(0, ZERO)),
        frame(&[command::NULL], back(0x0500, ZERO)),
    ]
    .concat();
    let mut adc = Ads131m04::new(SpiMock::new(&spi), PinMock::new(&[]));
    assert_eq!(
        adc.reset(),
        Err(Error::Response {
            expected: 0xFF24,
            got: 0x0500
        })
    );
    let (mut spi, mut pin) = adc.destroy();
    spi.done();
    pin.done();
}

#[test]
fn registers_are_read_and_written_with_the_documented_words() {
    // RREG of CLOCK is 0xA180; WREG of CLOCK 0x6180, acknowledged 0x4180; OSR 2048 for
    // 2 kSPS with all channels on in high-resolution mode is 0x0F12.
    assert_eq!(command::rreg(register::CLOCK, 0), 0xA180);
    assert_eq!(command::wreg(register::CLOCK, 0), 0x6180);
    let spi = [
        frame(&[0xA180], back(0, ZERO)),
        frame(&[command::NULL], back(0x0F0E, ZERO)),
        frame(&[0x6180, 0x0F12], back(0, ZERO)),
        frame(&[command::NULL], back(0x4180, ZERO)),
    ]
    .concat();
    let mut adc = Ads131m04::new(SpiMock::new(&spi), PinMock::new(&[]));
    assert_eq!(adc.read_register(register::CLOCK).unwrap(), 0x0F0E);
    adc.set_oversampling(Osr::X2048).unwrap();
    let (mut spi, mut pin) = adc.destroy();
    spi.done();
    pin.done();
}

#[test]
fn a_write_not_acknowledged_is_an_error() {
    let spi = [
        frame(&[command::wreg(register::GAIN, 0), 0x1111], back(0, ZERO)),
        frame(&[command::NULL], back(0x0000, ZERO)),
    ]
    .concat();
    let mut adc = Ads131m04::new(SpiMock::new(&spi), PinMock::new(&[]));
    assert_eq!(
        adc.write_register(register::GAIN, 0x1111),
        Err(Error::Response {
            expected: 0x4200,
            got: 0
        })
    );
    let (mut spi, mut pin) = adc.destroy();
    spi.done();
    pin.done();
}

#[test]
fn samples_are_read_only_when_drdy_is_low_and_sign_extended() {
    let ch = [
        [0x7F, 0xFF, 0xFF],
        [0x80, 0x00, 0x00],
        [0xFF, 0xFF, 0xFF],
        [0x00, 0x12, 0x34],
    ];
    let spi = frame(&[command::NULL], back(0x0500, ch));
    let pin = [Pin::get(State::High), Pin::get(State::Low)];
    let mut adc = Ads131m04::new(SpiMock::new(&spi), PinMock::new(&pin));
    assert_eq!(adc.sample().unwrap(), None);
    assert_eq!(
        adc.sample().unwrap(),
        Some([8_388_607, -8_388_608, -1, 0x1234])
    );
    let (mut spi, mut pin) = adc.destroy();
    spi.done();
    pin.done();
}
