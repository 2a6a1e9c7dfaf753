//! One MQTT connection, 3.1.1 or 5, behind one small interface.
//!
//! A session lives for exactly one network connection: when it fails it is dropped whole and a
//! new one is made. rumqttc would otherwise replay its own in-memory pending publishes after a
//! reconnect (and loses some on certain paths); the outbox is the only source of what to send.

use std::time::Duration;

use rumqttc::{v5, QoS, TlsConfiguration, Transport};

use super::UplinkError;
use crate::settings::{BrokerAddr, MqttVersion};

/// Largest packet sent: events are far smaller (an ingest line is at most 256 KiB).
pub const MAX_OUTGOING: usize = 4 * 1024 * 1024;

/// One line for a connection error. rumqttc nests an OS error inside its state error and
/// prints it with `{:?}` ("Mqtt state: Io error: Custom { kind: ConnectionAborted, .. }"):
/// the OS error's own text is what a technician needs, so it is used when there is one.
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.to_string();
        }
        cur = err.source();
    }
    e.to_string()
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub broker: BrokerAddr,
    pub version: MqttVersion,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    pub keep_alive: Duration,
    /// Publishes in flight at most (rumqttc's own limit is set a little above it).
    pub inflight: u16,
    /// Largest packet accepted from the broker: at least what the broker may send, so that no
    /// message from central can break the connection (larger ones are refused above).
    pub max_packet: usize,
    /// PEM: CA bundle, and the client certificate and key if the broker wants one.
    pub tls: Option<TlsMaterial>,
    pub last_will: (String, Vec<u8>),
}

/// TLS material, already read from disk.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    pub ca: Vec<u8>,
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

/// What happened on the connection, version-independent.
pub enum Io {
    Connected,
    /// A publish left, under this packet id (in the order publishes were requested).
    Sent(u16),
    /// The broker acknowledged this packet id.
    Acked(u16),
    /// The broker refused this packet id (MQTT 5 reason code ≥ 0x80).
    Refused(u16, String),
    /// A message from central.
    Inbound(Box<Inbound>),
    Other,
}

/// A message from central; acknowledge it with [`Session::ack`] once it is stored.
pub struct Inbound {
    pub topic: String,
    pub payload: Vec<u8>,
    packet: InboundPacket,
}

enum InboundPacket {
    V4(rumqttc::Publish),
    V5(v5::mqttbytes::v5::Publish),
}

/// A live connection attempt. Made once per connection, so the size difference between the
/// two versions' event loops does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Session {
    V4 {
        client: rumqttc::AsyncClient,
        events: rumqttc::EventLoop,
    },
    V5 {
        client: v5::AsyncClient,
        events: v5::EventLoop,
        /// The error that ended the connection, held back while packets read before it are
        /// still being handed out.
        failed: Option<super::BoxError>,
    },
}

impl Session {
    /// Prepares a connection; it is made by the first [`Session::poll`].
    pub fn new(c: &SessionConfig) -> Session {
        let transport = c.tls.as_ref().map(|t| {
            Transport::tls_with_config(TlsConfiguration::Simple {
                ca: t.ca.clone(),
                alpn: None,
                client_auth: t.client.clone(),
            })
        });
        // Room for the window plus the control messages sent at connect.
        let cap = usize::from(c.inflight) + 16;
        let inflight = c.inflight.saturating_add(8);
        match c.version {
            MqttVersion::V311 => {
                let mut o = rumqttc::MqttOptions::new(&c.client_id, &c.broker.host, c.broker.port);
                o.set_keep_alive(c.keep_alive)
                    .set_clean_session(true)
                    .set_inflight(inflight)
                    .set_request_channel_capacity(cap)
                    .set_manual_acks(true)
                    .set_max_packet_size(c.max_packet, MAX_OUTGOING)
                    .set_last_will(rumqttc::LastWill::new(
                        &c.last_will.0,
                        c.last_will.1.clone(),
                        QoS::AtLeastOnce,
                        true,
                    ));
                if let Some((u, p)) = &c.credentials {
                    o.set_credentials(u, p);
                }
                if let Some(t) = transport {
                    o.set_transport(t);
                }
                let (client, mut events) = rumqttc::AsyncClient::new(o, cap);
                let mut net = rumqttc::NetworkOptions::new();
                net.set_connection_timeout(10);
                events.set_network_options(net);
                Session::V4 { client, events }
            }
            MqttVersion::V5 => {
                let mut o = v5::MqttOptions::new(&c.client_id, &c.broker.host, c.broker.port);
                o.set_keep_alive(c.keep_alive)
                    .set_clean_start(true)
                    .set_outgoing_inflight_upper_limit(inflight)
                    .set_request_channel_capacity(cap)
                    .set_manual_acks(true)
                    .set_max_packet_size(Some(c.max_packet.min(u32::MAX as usize) as u32))
                    .set_connection_timeout(10)
                    .set_last_will(v5::mqttbytes::v5::LastWill::new(
                        &c.last_will.0,
                        c.last_will.1.clone(),
                        v5::mqttbytes::QoS::AtLeastOnce,
                        true,
                        None,
                    ));
                if let Some((u, p)) = &c.credentials {
                    o.set_credentials(u, p);
                }
                if let Some(t) = transport {
                    o.set_transport(t);
                }
                let (client, events) = v5::AsyncClient::new(o, cap);
                Session::V5 {
                    client,
                    events,
                    failed: None,
                }
            }
        }
    }

    /// The next thing that happened; an error means the connection is gone.
    pub async fn poll(&mut self) -> Result<Io, UplinkError> {
        match self {
            Session::V4 { events, .. } => {
                use rumqttc::{Event, Outgoing, Packet};
                let ev = events
                    .poll()
                    .await
                    .map_err(|e| UplinkError::Broker(Box::new(e)))?;
                Ok(match ev {
                    Event::Incoming(Packet::ConnAck(_)) => Io::Connected,
                    Event::Incoming(Packet::PubAck(a)) => Io::Acked(a.pkid),
                    Event::Incoming(Packet::Publish(p)) => Io::Inbound(Box::new(Inbound {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                        packet: InboundPacket::V4(p),
                    })),
                    Event::Incoming(Packet::Disconnect) => {
                        return Err(UplinkError::Disconnected(None))
                    }
                    Event::Outgoing(Outgoing::Publish(pkid)) => Io::Sent(pkid),
                    _ => Io::Other,
                })
            }
            Session::V5 { events, failed, .. } => {
                use v5::mqttbytes::v5::{Packet, PubAckReason};
                use v5::Event;
                // A broker may answer a refused publish with a PUBACK and close the connection
                // at once (mosquitto does after an ACL denial): rumqttc has then read the
                // PUBACK into its queue and returns the error first. The packets it read are
                // handed out before the error, so the refusal is not lost with the session.
                let ev = if failed.is_some() {
                    match events.state.events.pop_front() {
                        Some(ev) => ev,
                        None => {
                            return Err(match failed.take() {
                                Some(e) => UplinkError::Broker(e),
                                None => UplinkError::Disconnected(None),
                            })
                        }
                    }
                } else {
                    match events.poll().await {
                        Ok(ev) => ev,
                        Err(e) => match events.state.events.pop_front() {
                            Some(ev) => {
                                *failed = Some(Box::new(e));
                                ev
                            }
                            None => return Err(UplinkError::Broker(Box::new(e))),
                        },
                    }
                };
                Ok(match ev {
                    Event::Incoming(Packet::ConnAck(_)) => Io::Connected,
                    Event::Incoming(Packet::PubAck(a)) => match a.reason {
                        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => {
                            Io::Acked(a.pkid)
                        }
                        other => Io::Refused(a.pkid, format!("{other:?}")),
                    },
                    Event::Incoming(Packet::Publish(p)) => Io::Inbound(Box::new(Inbound {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload.to_vec(),
                        packet: InboundPacket::V5(p),
                    })),
                    Event::Incoming(Packet::Disconnect(d)) => {
                        return Err(UplinkError::Disconnected(Some(format!(
                            "{:?}",
                            d.reason_code
                        ))))
                    }
                    Event::Outgoing(rumqttc::Outgoing::Publish(pkid)) => Io::Sent(pkid),
                    _ => Io::Other,
                })
            }
        }
    }

    /// Queues a QoS 1 publish (never blocks: the window keeps the queue short).
    pub fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) -> Result<(), UplinkError> {
        let r = match self {
            Session::V4 { client, .. } => client
                .try_publish(topic, QoS::AtLeastOnce, retain, payload)
                .map_err(|e| Box::new(e) as super::BoxError),
            Session::V5 { client, .. } => client
                .try_publish(topic, v5::mqttbytes::QoS::AtLeastOnce, retain, payload)
                .map_err(|e| Box::new(e) as super::BoxError),
        };
        r.map_err(UplinkError::Client)
    }

    /// Subscribes at QoS 1.
    pub fn subscribe(&self, filter: &str) -> Result<(), UplinkError> {
        let r = match self {
            Session::V4 { client, .. } => client
                .try_subscribe(filter, QoS::AtLeastOnce)
                .map_err(|e| Box::new(e) as super::BoxError),
            Session::V5 { client, .. } => client
                .try_subscribe(filter, v5::mqttbytes::QoS::AtLeastOnce)
                .map_err(|e| Box::new(e) as super::BoxError),
        };
        r.map_err(UplinkError::Client)
    }

    /// Acknowledges a message from central (after it has been stored).
    pub fn ack(&self, msg: &Inbound) -> Result<(), UplinkError> {
        let r = match (self, &msg.packet) {
            (Session::V4 { client, .. }, InboundPacket::V4(p)) => client
                .try_ack(p)
                .map_err(|e| Box::new(e) as super::BoxError),
            (Session::V5 { client, .. }, InboundPacket::V5(p)) => client
                .try_ack(p)
                .map_err(|e| Box::new(e) as super::BoxError),
            _ => Ok(()),
        };
        r.map_err(UplinkError::Client)
    }

    /// Asks for a clean disconnect (no last will).
    pub fn disconnect(&self) {
        // Best effort: a client whose event loop is gone has nothing left to disconnect.
        match self {
            Session::V4 { client, .. } => drop(client.try_disconnect()),
            Session::V5 { client, .. } => drop(client.try_disconnect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_error_is_one_line_with_the_os_text() {
        let io = std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "connection closed by peer",
        );
        let nested = rumqttc::ConnectionError::MqttState(rumqttc::StateError::Io(io));
        assert_eq!(describe(&nested), "connection closed by peer");
        let refused = rumqttc::ConnectionError::Io(std::io::Error::from_raw_os_error(111));
        assert_eq!(describe(&refused), "Connection refused (os error 111)");
        assert_eq!(
            describe(&rumqttc::ConnectionError::NetworkTimeout),
            "Network timeout"
        );
    }
}
