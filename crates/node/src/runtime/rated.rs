//! Admission of a call on a trunk with a calls-per-second limit (`hatrunk_core::cps`): a token of
//! the trunk's rate pool first, then the call's slot. A call refused its token is refused at once
//! (`Decision::RateLimited`) and takes no slot; a call refused its slot gives its token straight
//! back, since it was never admitted; an admitted call's token goes back [`TOKEN_MS`] later. Both
//! admissions are idempotent per call, so a retry after a partial local answer repeats nothing.

use std::sync::Arc;
use std::time::Duration;

use hatrunk_core::cps::{rate_key, TOKEN_MS};
use hatrunk_core::pool::Decision;
use hatrunk_core::slot::SlotId;

use crate::admission::Admission;
use crate::error::NodeError;

/// Both answered from this node's shares, or `None`: use [`admit`].
pub(super) fn admit_now(adm: &Arc<dyn Admission>, trunk: &str, limit: u32, slot: &SlotId, rate: u32) -> Option<Decision> {
    let token = slot.token();
    match adm.admit_now(&rate_key(trunk), rate, &token)? {
        d if !d.admitted() => Some(Decision::RateLimited { per_second: rate }),
        _ => {
            let d = adm.admit_now(trunk, limit, slot)?;
            settle(adm, token, d.admitted());
            Some(d)
        }
    }
}

/// Both through the ledger when the shares do not answer.
pub(super) async fn admit(adm: Arc<dyn Admission>, trunk: String, limit: u32, slot: SlotId, rate: u32) -> Result<Decision, NodeError> {
    let token = slot.token();
    let result = async {
        if !adm.admit(rate_key(&trunk), rate, token.clone()).await?.admitted() {
            return Ok(Decision::RateLimited { per_second: rate });
        }
        adm.admit(trunk, limit, slot).await
    }
    .await;
    settle(&adm, token, matches!(result, Ok(d) if d.admitted()));
    result
}

/// A call that gave up waiting for its admission holds no token (giving back one not held is harmless).
pub(super) fn abandon(adm: &Arc<dyn Admission>, slot: &SlotId) {
    adm.release(&slot.token());
}

/// Hold an admitted call's token for [`TOKEN_MS`]; give back a refused call's now.
fn settle(adm: &Arc<dyn Admission>, token: SlotId, admitted: bool) {
    if !admitted {
        return adm.release(&token);
    }
    let adm = adm.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(TOKEN_MS)).await;
        adm.release(&token);
    });
}
