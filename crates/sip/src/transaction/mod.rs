//! RFC 3261 section 17 transactions (with RFC 6026's Accepted state), as pure state machines.
//!
//! A transaction never touches a socket or a clock: it is told what happened (a response, a
//! retransmitted request, a timer) and answers with [`Effect`]s (retransmit, send ACK, pass the
//! response up, arm a timer in N ms, terminate). The driver owns the bytes and the timer wheel.
//!
//! ```text
//! INVITE client (17.1.1)                      non-INVITE client (17.1.2)
//!  Calling --1xx--> Proceeding                 Trying --1xx--> Proceeding
//!     |  \--300-699: ACK--> Completed --D-->      |  \--final--> Completed --K--> Terminated
//!     \----2xx--> Accepted --M--> Terminated      \--F: timeout--> Terminated
//!  Calling --B: timeout--> Terminated
//!
//! INVITE server (17.2.1)                      non-INVITE server (17.2.2)
//!  Proceeding --300-699--> Completed --ACK--> Confirmed --I--> Terminated
//!     |                       \--H: no ACK--> Terminated
//!     \--2xx--> Accepted --L--> Terminated   Trying/Proceeding --final--> Completed --J--> Terminated
//! ```

mod key;
pub use key::TxKey;

/// RFC 3261 timer values, in milliseconds.
pub const T1: u64 = 500;
pub const T2: u64 = 4_000;
pub const T4: u64 = 5_000;
pub const TIMEOUT: u64 = 64 * T1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    A,
    B,
    D,
    E,
    F,
    K,
    G,
    H,
    I,
    J,
    L,
    M,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Invite,
    NonInvite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calling (INVITE client) or Trying (non-INVITE client and server).
    Trying,
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
    Terminated,
}

/// What the driver must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Client: send the request again. Server: send the last response again.
    Retransmit,
    /// INVITE client: send the ACK for the non-2xx final response.
    SendAck,
    /// Hand the response (client) up to the proxy core.
    Pass,
    /// Client: no final response in time (Timer B/F): act as if 408 arrived.
    Timeout,
    /// Arm a timer of this transaction.
    Arm(Timer, u64),
    /// Forget the transaction.
    Terminated,
}

/// A client transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTx {
    pub kind: Kind,
    pub state: State,
    reliable: bool,
    interval: u64,
}

impl ClientTx {
    /// Start, after the request was first sent. `reliable` is true over TCP/TLS.
    pub fn start(kind: Kind, reliable: bool) -> (ClientTx, Vec<Effect>) {
        let tx = ClientTx { kind, state: State::Trying, reliable, interval: T1 };
        let mut fx = vec![Effect::Arm(if kind == Kind::Invite { Timer::B } else { Timer::F }, TIMEOUT)];
        if !reliable {
            fx.push(Effect::Arm(if kind == Kind::Invite { Timer::A } else { Timer::E }, T1));
        }
        (tx, fx)
    }

    pub fn on_response(&mut self, code: u16) -> Vec<Effect> {
        use State::*;
        let wait = |t: Timer, ms: u64, reliable: bool| Effect::Arm(t, if reliable { 0 } else { ms });
        match (self.kind, self.state) {
            (_, Trying | Proceeding) if code < 200 => {
                self.state = Proceeding;
                vec![Effect::Pass]
            }
            (Kind::Invite, Trying | Proceeding) if code < 300 => {
                self.state = Accepted;
                vec![Effect::Pass, Effect::Arm(Timer::M, TIMEOUT)]
            }
            (Kind::Invite, Trying | Proceeding) => {
                self.state = Completed;
                vec![Effect::SendAck, Effect::Pass, wait(Timer::D, 32_000, self.reliable)]
            }
            (Kind::Invite, Completed) if code >= 300 => vec![Effect::SendAck],
            (Kind::Invite, Accepted) if (200..300).contains(&code) => vec![Effect::Pass],
            (Kind::NonInvite, Trying | Proceeding) => {
                self.state = Completed;
                vec![Effect::Pass, wait(Timer::K, T4, self.reliable)]
            }
            _ => vec![],
        }
    }

    pub fn on_timer(&mut self, t: Timer) -> Vec<Effect> {
        use State::*;
        match (t, self.state) {
            (Timer::A, Trying) => {
                self.interval *= 2;
                vec![Effect::Retransmit, Effect::Arm(Timer::A, self.interval)]
            }
            (Timer::E, Trying | Proceeding) => {
                self.interval = if self.state == Proceeding { T2 } else { (self.interval * 2).min(T2) };
                vec![Effect::Retransmit, Effect::Arm(Timer::E, self.interval)]
            }
            (Timer::B, Trying) | (Timer::F, Trying | Proceeding) => {
                self.state = Terminated;
                vec![Effect::Timeout, Effect::Terminated]
            }
            (Timer::D, Completed) | (Timer::K, Completed) | (Timer::M, Accepted) => {
                self.state = Terminated;
                vec![Effect::Terminated]
            }
            _ => vec![],
        }
    }
}

/// A server transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTx {
    pub kind: Kind,
    pub state: State,
    reliable: bool,
    interval: u64,
}

impl ServerTx {
    pub fn start(kind: Kind, reliable: bool) -> ServerTx {
        let state = if kind == Kind::Invite { State::Proceeding } else { State::Trying };
        ServerTx { kind, state, reliable, interval: T1 }
    }

    /// The TU sent a response with `code` through this transaction.
    pub fn on_send(&mut self, code: u16) -> Vec<Effect> {
        use State::*;
        match (self.kind, self.state) {
            (_, Trying | Proceeding) if code < 200 => {
                self.state = Proceeding;
                vec![]
            }
            (Kind::Invite, Proceeding) if code < 300 => {
                self.state = Accepted;
                vec![Effect::Arm(Timer::L, TIMEOUT)]
            }
            (Kind::Invite, Proceeding) => {
                self.state = Completed;
                let mut fx = vec![Effect::Arm(Timer::H, TIMEOUT)];
                if !self.reliable {
                    fx.push(Effect::Arm(Timer::G, T1));
                }
                fx
            }
            (Kind::NonInvite, Trying | Proceeding) => {
                self.state = Completed;
                vec![Effect::Arm(Timer::J, if self.reliable { 0 } else { TIMEOUT })]
            }
            _ => vec![],
        }
    }

    /// The request arrived again (a retransmission).
    pub fn on_retransmission(&mut self) -> Vec<Effect> {
        match self.state {
            State::Proceeding | State::Completed => vec![Effect::Retransmit],
            _ => vec![],
        }
    }

    /// An ACK matched this (INVITE) transaction.
    pub fn on_ack(&mut self) -> Vec<Effect> {
        if self.state == State::Completed {
            self.state = State::Confirmed;
            return vec![Effect::Arm(Timer::I, if self.reliable { 0 } else { T4 })];
        }
        vec![]
    }

    pub fn on_timer(&mut self, t: Timer) -> Vec<Effect> {
        use State::*;
        match (t, self.state) {
            (Timer::G, Completed) => {
                self.interval = (self.interval * 2).min(T2);
                vec![Effect::Retransmit, Effect::Arm(Timer::G, self.interval)]
            }
            (Timer::H, Completed) | (Timer::I, Confirmed) | (Timer::J, Completed) | (Timer::L, Accepted) => {
                self.state = Terminated;
                vec![Effect::Terminated]
            }
            _ => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invite_client_retransmits_with_backoff_then_times_out() {
        let (mut tx, fx) = ClientTx::start(Kind::Invite, false);
        assert_eq!(fx, vec![Effect::Arm(Timer::B, 32_000), Effect::Arm(Timer::A, 500)]);
        assert_eq!(tx.on_timer(Timer::A), vec![Effect::Retransmit, Effect::Arm(Timer::A, 1000)]);
        assert_eq!(tx.on_timer(Timer::A), vec![Effect::Retransmit, Effect::Arm(Timer::A, 2000)]);
        assert_eq!(tx.on_timer(Timer::B), vec![Effect::Timeout, Effect::Terminated]);
    }

    #[test]
    fn invite_client_acks_non_2xx_and_absorbs_retransmissions() {
        let (mut tx, _) = ClientTx::start(Kind::Invite, false);
        assert_eq!(tx.on_response(180), vec![Effect::Pass]);
        assert_eq!(tx.on_timer(Timer::A), vec![], "no retransmission once proceeding");
        assert_eq!(tx.on_timer(Timer::B), vec![], "Timer B only in Calling");
        assert_eq!(tx.on_response(503), vec![Effect::SendAck, Effect::Pass, Effect::Arm(Timer::D, 32_000)]);
        assert_eq!(tx.on_response(503), vec![Effect::SendAck]);
        assert_eq!(tx.on_timer(Timer::D), vec![Effect::Terminated]);
    }

    #[test]
    fn invite_client_forwards_2xx_retransmissions() {
        let (mut tx, _) = ClientTx::start(Kind::Invite, true);
        assert_eq!(tx.on_response(200), vec![Effect::Pass, Effect::Arm(Timer::M, TIMEOUT)]);
        assert_eq!(tx.on_response(200), vec![Effect::Pass]);
        assert_eq!(tx.on_response(486), vec![]);
    }

    #[test]
    fn non_invite_client() {
        let (mut tx, fx) = ClientTx::start(Kind::NonInvite, false);
        assert_eq!(fx, vec![Effect::Arm(Timer::F, TIMEOUT), Effect::Arm(Timer::E, 500)]);
        assert_eq!(tx.on_timer(Timer::E), vec![Effect::Retransmit, Effect::Arm(Timer::E, 1000)]);
        assert_eq!(tx.on_response(100), vec![Effect::Pass]);
        assert_eq!(tx.on_timer(Timer::E), vec![Effect::Retransmit, Effect::Arm(Timer::E, T2)]);
        assert_eq!(tx.on_response(200), vec![Effect::Pass, Effect::Arm(Timer::K, T4)]);
        assert_eq!(tx.on_response(200), vec![]);
        assert_eq!(tx.on_timer(Timer::K), vec![Effect::Terminated]);
    }

    #[test]
    fn invite_server_retransmits_final_until_ack() {
        let mut tx = ServerTx::start(Kind::Invite, false);
        assert_eq!(tx.on_retransmission(), vec![Effect::Retransmit], "resend the 100");
        assert_eq!(tx.on_send(487), vec![Effect::Arm(Timer::H, TIMEOUT), Effect::Arm(Timer::G, T1)]);
        assert_eq!(tx.on_timer(Timer::G), vec![Effect::Retransmit, Effect::Arm(Timer::G, 1000)]);
        assert_eq!(tx.on_ack(), vec![Effect::Arm(Timer::I, T4)]);
        assert_eq!(tx.on_timer(Timer::G), vec![]);
        assert_eq!(tx.on_timer(Timer::I), vec![Effect::Terminated]);
    }

    #[test]
    fn invite_server_2xx_goes_to_accepted() {
        let mut tx = ServerTx::start(Kind::Invite, false);
        assert_eq!(tx.on_send(200), vec![Effect::Arm(Timer::L, TIMEOUT)]);
        assert_eq!(tx.on_retransmission(), vec![], "absorbed: the 2xx is retransmitted end to end");
    }

    #[test]
    fn non_invite_server() {
        let mut tx = ServerTx::start(Kind::NonInvite, true);
        assert_eq!(tx.on_retransmission(), vec![]);
        assert_eq!(tx.on_send(200), vec![Effect::Arm(Timer::J, 0)]);
        assert_eq!(tx.on_retransmission(), vec![Effect::Retransmit]);
        assert_eq!(tx.on_timer(Timer::J), vec![Effect::Terminated]);
    }
}
