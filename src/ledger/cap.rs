//! The cap on the number of ledgers (`ELEANOR_LEDGER_MAX_LEDGERS`): a token allowed `"*"`
//! creates a ledger with every new id it appends to, so without a bound one writer could fill
//! the index with ledgers.
//!
//! The count is kept where this process creates ledgers ([`LedgerCap::create`], the one
//! place an append creates one), not read per append: it is taken once, by the first creation
//! (which lists every ledger, page by page: startup reads no ledger, so it cannot count them
//! for free), and is then counted up per ledger created. Appends to an existing ledger never come here, so they
//! go on at the cap. The count is this process's: replicas sharing one store each count the
//! ledgers that existed when they started plus those they created, so together they may
//! create up to one cap's worth more before each refuses (a bound on runaway creation, not an
//! exact quota); a ledger whose creation a crash interrupted may be counted twice, which errs
//! on the side of refusing.

use tokio::sync::Mutex;

use super::LedgerError;
use crate::chain::entry::LedgerId;
use crate::store::{Meta, Stores};

/// Ledgers listed per call while counting.
const COUNT_PAGE: usize = 1000;

pub(crate) struct LedgerCap {
    max: u64,
    /// The ledgers known to exist; `None` until counted. Held across a creation, so that
    /// concurrent creations of different ledgers are counted one by one.
    known: Mutex<Option<u64>>,
}

impl LedgerCap {
    pub fn new(max: u64) -> LedgerCap {
        LedgerCap {
            max,
            known: Mutex::new(None),
        }
    }

    /// No cap, and nothing to count: the commit protocol's own tests, whose calls to the
    /// store are the subject.
    #[cfg(test)]
    pub fn unbounded() -> LedgerCap {
        LedgerCap {
            max: u64::MAX,
            known: Mutex::new(Some(0)),
        }
    }

    /// Creates `ledger` (which has no `META`) as [`crate::store::IndexStore::create_ledger`]
    /// does, unless that would make more than the cap: then
    /// [`LedgerError::LedgerLimitReached`], and nothing is written.
    pub async fn create(&self, stores: &Stores, ledger: &LedgerId) -> Result<Meta, LedgerError> {
        let mut known = self.known.lock().await;
        let count = match *known {
            Some(count) => count,
            None => count_ledgers(stores).await?,
        };
        *known = Some(count);
        if count >= self.max {
            tracing::warn!(ledger_id = %ledger, max = self.max, "ledger not created: ELEANOR_LEDGER_MAX_LEDGERS reached");
            return Err(LedgerError::LedgerLimitReached { max: self.max });
        }
        let meta = stores.index.create_ledger(ledger).await?;
        *known = Some(count + 1);
        Ok(meta)
    }
}

/// Every ledger the index lists, counted page by page.
async fn count_ledgers(stores: &Stores) -> Result<u64, LedgerError> {
    let mut count = 0;
    let mut after: Option<LedgerId> = None;
    loop {
        let page = stores.index.ledgers(after.as_ref(), COUNT_PAGE).await?;
        count += page.len() as u64;
        match page.last() {
            Some(last) if page.len() == COUNT_PAGE => after = Some(last.clone()),
            _ => return Ok(count),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BackendMetrics;
    use crate::store::local::LocalStore;

    fn id(s: &str) -> LedgerId {
        LedgerId::parse(s).unwrap()
    }

    #[tokio::test]
    async fn the_cap_counts_the_store_once_then_each_creation_and_refuses_beyond_it() {
        let dir = tempfile::tempdir().unwrap();
        let stores = LocalStore::open(dir.path(), BackendMetrics::unregistered())
            .unwrap()
            .into_stores();
        stores.index.create_ledger(&id("before")).await.unwrap();
        let cap = LedgerCap::new(3);
        cap.create(&stores, &id("a")).await.unwrap();
        assert_eq!(
            *cap.known.lock().await,
            Some(2),
            "one listed before, one made"
        );
        cap.create(&stores, &id("b")).await.unwrap();
        assert!(matches!(
            cap.create(&stores, &id("c")).await,
            Err(LedgerError::LedgerLimitReached { max: 3 })
        ));
        assert_eq!(
            stores.index.head(&id("c")).await.unwrap(),
            None,
            "nothing written"
        );
    }
}
