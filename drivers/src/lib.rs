//! Sensor drivers for the ACSGD edge appliance: bytes from real devices to typed readings.
//!
//! One file per protocol, each a pure parser over byte slices that knows nothing of sockets:
//! [`nmea`] (GNSS receivers), [`egts`], [`wialon`] and [`teltonika`] (trackers and electronic
//! seals), [`rpm`] (radiation portal monitors) and [`lane`] (the lane-node frames the firmware
//! speaks). [`codec`] wraps them as `tokio_util` codecs with maximum frame sizes and
//! resynchronisation; [`transport`] runs them over serial ports, TCP and UDP.
//!
//! Without the default `std` feature only [`crc`] and [`lane`] are built, with no allocation:
//! that is what the `no_std` lane-node firmware links.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

#[cfg(feature = "std")]
pub mod arnavi;
#[cfg(feature = "std")]
pub mod codec;
pub mod crc;
#[cfg(feature = "std")]
pub mod decode;
pub mod lane;

#[cfg(feature = "std")]
pub mod egts;
#[cfg(feature = "std")]
pub mod galileo;
#[cfg(feature = "std")]
pub mod nmea;
#[cfg(feature = "std")]
pub mod reading;
#[cfg(feature = "std")]
pub mod rpm;
#[cfg(feature = "std")]
pub mod teltonika;
#[cfg(feature = "std")]
pub mod transport;
#[cfg(feature = "std")]
pub mod wialon;

#[cfg(feature = "std")]
pub use reading::Reading;
