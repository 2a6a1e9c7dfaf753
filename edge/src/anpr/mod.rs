//! Plate recognition on the appliance (issue 6). Present so far: the country-aware format
//! rules and correction ([`format`]) and multi-frame voting ([`vote`]), the parts after the
//! recogniser. Frame sources, localisation, rectification and the ONNX recogniser come next
//! (see the README's "What is not here yet").

pub mod format;
pub mod vote;
