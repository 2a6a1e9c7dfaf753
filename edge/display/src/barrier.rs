//! What a screen asks of a lane's barrier, and what it is told: the display's side of the
//! appliance's lane control (`acsgd::barrier` carries the requests out over the lane node's
//! line and answers them).
//!
//! The display only forwards an officer's request and shows the answer; whether the barrier
//! may move is the lane node's call (it refuses to lower the arm onto an occupied loop), and
//! the record of who moved it is the `barrier` event the lane control stores.

use serde::Serialize;
use tokio::sync::oneshot;

use crate::settings::Role;

/// An officer's request to open or close one lane's barrier.
#[derive(Debug)]
pub struct Request {
    pub open: bool,
    pub by: Actor,
    /// The lane control answers once the lane node has (or has not).
    pub reply: oneshot::Sender<Answer>,
}

/// Who asked: the signed-in officer, as the `barrier` event names them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Actor {
    pub officer: String,
    pub officer_name: String,
    pub role: Role,
}

/// How a barrier command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The node carried it out.
    Done,
    /// The node refused to lower the arm: a vehicle is on the loop under it.
    RefusedOccupied,
    /// The node reports its actuator failed.
    ActuatorFault,
    /// The node refused it for a reason this appliance does not know (a newer firmware).
    Refused,
    /// The node did not acknowledge it, after every try.
    NoAnswer,
    /// No frame has come from the lane node since the start: nothing to address it to.
    NoNode,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::RefusedOccupied => "refused_occupied",
            Outcome::ActuatorFault => "actuator_fault",
            Outcome::Refused => "refused",
            Outcome::NoAnswer => "no_answer",
            Outcome::NoNode => "no_node",
        }
    }
}

/// The lane control's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    /// What the barrier command came to.
    pub result: Outcome,
    /// The lights command that follows a barrier that moved (green when opened, red when
    /// closed); absent when the barrier did not move.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lights: Option<Outcome>,
    /// The `barrier` event that records it, when it was stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_named_as_the_events_and_the_screen_name_them() {
        assert_eq!(
            serde_json::to_value(Outcome::RefusedOccupied).unwrap(),
            "refused_occupied"
        );
        assert_eq!(Outcome::NoNode.as_str(), "no_node");
    }
}
