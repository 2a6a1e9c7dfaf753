//! The lane's outputs: the barrier and the lights, as the appliance commands them, with the
//! interlock that a barrier never comes down on a vehicle.
//!
//! At power-up (and so after a watchdog reset) the barrier is down and the lights red: the
//! lane is closed until the appliance opens it. Every command is answered with an `Ack`
//! carrying its `seq` and what was done ([`AckResult`]).

use acsgd_drivers::lane::{AckResult, Aspect, Body};

/// What the outputs are doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outputs {
    pub barrier_open: bool,
    pub aspect: Aspect,
}

impl Default for Outputs {
    fn default() -> Self {
        Self::new()
    }
}

impl Outputs {
    pub const fn new() -> Self {
        Outputs {
            barrier_open: false,
            aspect: Aspect::Red,
        }
    }

    /// Carries out a command; `under_barrier_blocked` is the interlock (the loop under the
    /// barrier occupied, faulted or untuned). Returns the `Ack` result.
    pub fn command(&mut self, body: &Body, under_barrier_blocked: bool) -> u8 {
        match *body {
            Body::Barrier { open: true } => {
                self.barrier_open = true;
                AckResult::DONE
            }
            Body::Barrier { open: false } if under_barrier_blocked => AckResult::REFUSED_OCCUPIED,
            Body::Barrier { open: false } => {
                self.barrier_open = false;
                AckResult::DONE
            }
            Body::Lights { aspect } => {
                self.aspect = aspect;
                AckResult::DONE
            }
            _ => AckResult::UNKNOWN_COMMAND,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_barrier_is_not_lowered_onto_a_vehicle() {
        let mut o = Outputs::new();
        assert!(!o.barrier_open);
        assert_eq!(o.aspect, Aspect::Red);
        assert_eq!(
            o.command(&Body::Barrier { open: true }, true),
            AckResult::DONE
        );
        assert!(o.barrier_open);
        assert_eq!(
            o.command(&Body::Barrier { open: false }, true),
            AckResult::REFUSED_OCCUPIED
        );
        assert!(o.barrier_open);
        assert_eq!(
            o.command(&Body::Barrier { open: false }, false),
            AckResult::DONE
        );
        assert!(!o.barrier_open);
        assert_eq!(
            o.command(
                &Body::Lights {
                    aspect: Aspect::Green
                },
                true
            ),
            AckResult::DONE
        );
        assert_eq!(o.aspect, Aspect::Green);
        assert_eq!(
            o.command(&Body::Ack { seq: 1, result: 0 }, false),
            AckResult::UNKNOWN_COMMAND
        );
    }
}
