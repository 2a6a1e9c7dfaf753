//! The checksums the sensor protocols use, table-free and `no_std`.
//!
//! Each function names the catalogue algorithm (reveng.sourceforge.io's CRC catalogue) so a reader
//! can check parameters without reading the loop; the unit tests pin each one to the catalogue's
//! check value over `"123456789"`.

/// CRC-8 as EGTS uses it for the transport header: poly 0x31, init 0xFF, not reflected,
/// no final xor (catalogue name CRC-8/NRSC-5).
pub fn crc8_egts(data: &[u8]) -> u8 {
    let mut crc: u8 = 0xFF;
    for &b in data {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x31
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// CRC-16/CCITT-FALSE (CRC-16/IBM-3740): poly 0x1021, init 0xFFFF, not reflected. EGTS body and
/// the lane-node frames.
pub fn crc16_ccitt_false(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// CRC-16/ARC (also called CRC-16/IBM): poly 0x8005 reflected (0xA001), init 0. Teltonika AVL
/// packets and Wialon IPS 2.0.
pub fn crc16_arc(data: &[u8]) -> u16 {
    crc16_reflected_8005(0, data)
}

/// CRC-16/MODBUS: the same polynomial as ARC, init 0xFFFF. Galileosky packets.
pub fn crc16_modbus(data: &[u8]) -> u16 {
    crc16_reflected_8005(0xFFFF, data)
}

fn crc16_reflected_8005(init: u16, data: &[u8]) -> u16 {
    let mut crc: u16 = init;
    for &b in data {
        crc ^= b as u16;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHECK: &[u8] = b"123456789";

    #[test]
    fn crc8_egts_matches_the_catalogue_check_value() {
        // CRC-8/NRSC-5 check = 0xF7
        assert_eq!(crc8_egts(CHECK), 0xF7);
    }

    #[test]
    fn crc16_ccitt_false_matches_the_catalogue_check_value() {
        assert_eq!(crc16_ccitt_false(CHECK), 0x29B1);
    }

    #[test]
    fn crc16_arc_matches_the_catalogue_check_value() {
        assert_eq!(crc16_arc(CHECK), 0xBB3D);
    }

    #[test]
    fn crc16_modbus_matches_the_catalogue_check_value() {
        assert_eq!(crc16_modbus(CHECK), 0x4B37);
    }
}
