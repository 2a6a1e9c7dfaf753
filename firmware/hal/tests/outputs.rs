//! The barrier and lights on scripted pins: lights off before the next one on, then the
//! barrier.

use embedded_hal_mock::eh1::digital::{Mock, State, Transaction as T};
use lane_node_core::lane::Aspect;
use lane_node_core::outputs::Outputs;
use lane_node_hal::outputs::OutputPins;

#[test]
fn red_to_green_switches_red_off_before_green_on_then_raises_the_barrier() {
    let barrier = Mock::new(&[T::set(State::High)]);
    let red = Mock::new(&[T::set(State::Low)]);
    let yellow = Mock::new(&[T::set(State::Low)]);
    let green = Mock::new(&[T::set(State::High)]);
    let mut pins = OutputPins::new(barrier, red, yellow, green);
    pins.apply(&Outputs {
        barrier_open: true,
        aspect: Aspect::Green,
    })
    .unwrap();
    let (mut b, mut r, mut y, mut g) = pins.destroy();
    for p in [&mut b, &mut r, &mut y, &mut g] {
        p.done();
    }
}

#[test]
fn power_up_state_is_red_with_the_barrier_down() {
    let barrier = Mock::new(&[T::set(State::Low)]);
    let red = Mock::new(&[T::set(State::High)]);
    let yellow = Mock::new(&[T::set(State::Low)]);
    let green = Mock::new(&[T::set(State::Low)]);
    let mut pins = OutputPins::new(barrier, red, yellow, green);
    pins.apply(&Outputs::new()).unwrap();
    let (mut b, mut r, mut y, mut g) = pins.destroy();
    for p in [&mut b, &mut r, &mut y, &mut g] {
        p.done();
    }
}
