//! What ingest needs to know of stored history, and nothing more: the version last recorded
//! running per (service, environment), and the task ids earlier imports of a Conductor run
//! recorded. Ingest reads through this, never the store itself, so what it can see of the ledger
//! is stated here.

use super::ReadError;
use crate::storage::Store;

/// Read-only window on the stored facts ingest consults.
#[derive(Clone)]
pub struct History {
    store: Store,
}

impl History {
    pub fn new(store: Store) -> History {
        History { store }
    }

    /// The version the recorded sightings say runs in (service, environment), if any.
    pub async fn latest_version(
        &self,
        service: &str,
        environment: &str,
    ) -> Result<Option<String>, ReadError> {
        Ok(self
            .store
            .latest_sighting(service, environment)
            .await?
            .map(|v| v.version))
    }

    /// The task ids earlier imports of Conductor run `run_id` recorded.
    pub async fn imported_task_ids(&self, run_id: &str) -> Result<Vec<String>, ReadError> {
        Ok(self.store.imported_task_ids(run_id).await?)
    }
}
