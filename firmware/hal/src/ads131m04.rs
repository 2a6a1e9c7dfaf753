//! TI ADS131M04: four simultaneously sampling 24-bit delta-sigma channels over SPI (mode 1),
//! up to 64 kSPS, made for bridge sensors such as load cells.
//!
//! ## Frames
//! Everything happens in frames of six 24-bit words (the power-up word length): on MOSI the
//! command in the upper 16 bits of the first word (a `WREG` is followed by its data words),
//! zeros after; on MISO the response to the *previous* frame's command, the four channels'
//! conversions (two's complement, MSB first) and a CRC word. `NULL` is answered with
//! `STATUS`, `RESET` with `0xFF24`, `RREG` with the register's value, `WREG` of one register
//! at `a` with `0x4000 | a << 7`. DRDY goes low when a conversion is ready and back high when
//! its frame has been read.
//!
//! ## Driver
//! [`Ads131m04::new`] takes the `SpiDevice` (chip select is the device's business) and the
//! DRDY `InputPin`; [`Ads131m04::destroy`] gives them back. Errors keep the bus's or the pin's
//! own ([`Error`]), and a response that is not what the command must get is an error too,
//! never taken as data.

use embedded_hal::digital::InputPin;
use embedded_hal::spi::SpiDevice;
use lane_node_core::CELLS;

use crate::LoadCellAdc;

/// Bytes in one frame: response, four channels, CRC.
pub const FRAME: usize = 6 * 3;

/// Command words.
pub mod command {
    pub const NULL: u16 = 0x0000;
    pub const RESET: u16 = 0x0011;
    pub const STANDBY: u16 = 0x0022;
    pub const WAKEUP: u16 = 0x0033;
    /// Read `n + 1` registers from `addr`.
    pub const fn rreg(addr: u8, n: u8) -> u16 {
        0xA000 | ((addr as u16 & 0x3f) << 7) | (n as u16 & 0x7f)
    }
    /// Write `n + 1` registers from `addr`.
    pub const fn wreg(addr: u8, n: u8) -> u16 {
        0x6000 | ((addr as u16 & 0x3f) << 7) | (n as u16 & 0x7f)
    }
    /// What a `WREG` of `n + 1` registers at `addr` is answered with.
    pub const fn wreg_ack(addr: u8, n: u8) -> u16 {
        0x4000 | ((addr as u16 & 0x3f) << 7) | (n as u16 & 0x7f)
    }
    /// The answer to `RESET` from a four-channel device.
    pub const RESET_ACK: u16 = 0xFF24;
}

/// Register addresses.
pub mod register {
    pub const ID: u8 = 0x00;
    pub const STATUS: u8 = 0x01;
    pub const MODE: u8 = 0x02;
    pub const CLOCK: u8 = 0x03;
    pub const GAIN: u8 = 0x04;
}

/// Oversampling ratio: with the usual 8.192 MHz clock the data rate is 4.096 MHz / OSR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Osr {
    X128 = 0,
    X256 = 1,
    X512 = 2,
    X1024 = 3,
    X2048 = 4,
    X4096 = 5,
    X8192 = 6,
    X16256 = 7,
}

/// Why a transfer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<SpiE, PinE> {
    /// The SPI bus failed.
    Spi(SpiE),
    /// Reading DRDY failed.
    Pin(PinE),
    /// The device answered a command with something else.
    Response { expected: u16, got: u16 },
}

/// The converter on its bus.
pub struct Ads131m04<SPI, DRDY> {
    spi: SPI,
    drdy: DRDY,
}

impl<SPI, DRDY, SpiE, PinE> Ads131m04<SPI, DRDY>
where
    SPI: SpiDevice<Error = SpiE>,
    DRDY: InputPin<Error = PinE>,
{
    pub fn new(spi: SPI, drdy: DRDY) -> Self {
        Ads131m04 { spi, drdy }
    }

    /// Gives the bus and the pin back.
    pub fn destroy(self) -> (SPI, DRDY) {
        (self.spi, self.drdy)
    }

    /// One frame: `words` (commands and data, 16 bits each) out in the upper bits of the
    /// 24-bit words, the frame the device sent back in.
    fn frame(&mut self, words: &[u16]) -> Result<[u8; FRAME], Error<SpiE, PinE>> {
        let mut buf = [0u8; FRAME];
        for (i, w) in words.iter().take(6).enumerate() {
            buf[3 * i..3 * i + 2].copy_from_slice(&w.to_be_bytes());
        }
        self.spi.transfer_in_place(&mut buf).map_err(Error::Spi)?;
        Ok(buf)
    }

    /// The response word of a frame.
    fn response(f: &[u8; FRAME]) -> u16 {
        u16::from_be_bytes([f[0], f[1]])
    }

    fn expect(&mut self, expected: u16) -> Result<(), Error<SpiE, PinE>> {
        let got = Self::response(&self.frame(&[command::NULL])?);
        if got == expected {
            Ok(())
        } else {
            Err(Error::Response { expected, got })
        }
    }

    /// Resets the device and checks it answered as a four-channel ADS131M0x.
    pub fn reset(&mut self) -> Result<(), Error<SpiE, PinE>> {
        self.frame(&[command::RESET])?;
        self.expect(command::RESET_ACK)
    }

    /// Reads one register.
    pub fn read_register(&mut self, addr: u8) -> Result<u16, Error<SpiE, PinE>> {
        self.frame(&[command::rreg(addr, 0)])?;
        Ok(Self::response(&self.frame(&[command::NULL])?))
    }

    /// Writes one register and checks the device acknowledged it.
    pub fn write_register(&mut self, addr: u8, value: u16) -> Result<(), Error<SpiE, PinE>> {
        self.frame(&[command::wreg(addr, 0), value])?;
        self.expect(command::wreg_ack(addr, 0))
    }

    /// All four channels on, high-resolution power mode, this oversampling ratio
    /// (`CLOCK`: channel enables in bits 11–8, OSR in 4–2, power mode in 1–0).
    pub fn set_oversampling(&mut self, osr: Osr) -> Result<(), Error<SpiE, PinE>> {
        self.write_register(register::CLOCK, 0x0F00 | (osr as u16) << 2 | 0b10)
    }

    /// The conversion DRDY announced, or `None` while it is high.
    pub fn read(&mut self) -> Result<Option<[i32; CELLS]>, Error<SpiE, PinE>> {
        if self.drdy.is_high().map_err(Error::Pin)? {
            return Ok(None);
        }
        let f = self.frame(&[command::NULL])?;
        let mut out = [0i32; CELLS];
        for (c, v) in out.iter_mut().enumerate() {
            let b = &f[3 + 3 * c..6 + 3 * c];
            // 24-bit two's complement, sign-extended through the top byte.
            *v = i32::from_be_bytes([b[0], b[1], b[2], 0]) >> 8;
        }
        Ok(Some(out))
    }
}

impl<SPI, DRDY, SpiE, PinE> LoadCellAdc for Ads131m04<SPI, DRDY>
where
    SPI: SpiDevice<Error = SpiE>,
    DRDY: InputPin<Error = PinE>,
{
    type Error = Error<SpiE, PinE>;

    fn sample(&mut self) -> Result<Option<[i32; CELLS]>, Self::Error> {
        self.read()
    }
}
