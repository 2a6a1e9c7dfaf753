//! The barrier relay and the lane lights on GPIO: the state [`lane_node_core::outputs`]
//! decided (interlock included) put on the pins. Red and green are never lit together: a pin
//! is switched off before another is switched on.

use embedded_hal::digital::OutputPin;
use lane_node_core::lane::Aspect;
use lane_node_core::outputs::Outputs;

/// The barrier relay (high raises the barrier) and one pin per light.
pub struct OutputPins<B, R, Y, G> {
    barrier: B,
    red: R,
    yellow: Y,
    green: G,
}

/// A pin refused to switch; which one, and the HAL's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinError<E> {
    Barrier(E),
    Light(E),
}

impl<B, R, Y, G, E> OutputPins<B, R, Y, G>
where
    B: OutputPin<Error = E>,
    R: OutputPin<Error = E>,
    Y: OutputPin<Error = E>,
    G: OutputPin<Error = E>,
{
    pub fn new(barrier: B, red: R, yellow: Y, green: G) -> Self {
        OutputPins {
            barrier,
            red,
            yellow,
            green,
        }
    }

    /// Puts `o` on the pins: the lights off first, then the one aspect on, then the barrier.
    pub fn apply(&mut self, o: &Outputs) -> Result<(), PinError<E>> {
        let light = PinError::Light;
        let (r, y, g) = match o.aspect {
            Aspect::Off => (false, false, false),
            Aspect::Red => (true, false, false),
            Aspect::Yellow => (false, true, false),
            Aspect::Green => (false, false, true),
        };
        // Off first, so that two aspects are never lit together.
        if !r {
            self.red.set_low().map_err(light)?;
        }
        if !y {
            self.yellow.set_low().map_err(light)?;
        }
        if !g {
            self.green.set_low().map_err(light)?;
        }
        if r {
            self.red.set_high().map_err(light)?;
        }
        if y {
            self.yellow.set_high().map_err(light)?;
        }
        if g {
            self.green.set_high().map_err(light)?;
        }
        self.barrier
            .set_state(o.barrier_open.into())
            .map_err(PinError::Barrier)
    }

    /// Gives the pins back.
    pub fn destroy(self) -> (B, R, Y, G) {
        (self.barrier, self.red, self.yellow, self.green)
    }
}
