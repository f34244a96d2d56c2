//! What ingest needs to know of stored history, and nothing more: the version last recorded
//! running per (service, environment), what earlier imports of a Conductor run recorded (task
//! ids, the last observation), and which traces committed telemetry binds (for the binding sync). Ingest reads through this, never the store itself, so what it can see of the ledger
//! is stated here.

use super::ReadError;
use crate::core::evidence::ObservedRun;
use crate::storage::Store;

/// What the last full import of a Conductor run saw.
#[derive(Debug, Clone, PartialEq)]
pub struct LastObservation {
    pub run: ObservedRun,
    /// The change the run belongs to.
    pub change_id: String,
    /// Whether the run's deletion from Conductor was recorded since.
    pub deleted: bool,
}

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

    /// The ledger's size (0 before it exists).
    pub async fn ledger_size(&self) -> Result<u64, ReadError> {
        Ok(self.store.head().await?.map_or(0, |h| h.head.size))
    }

    /// The first seq whose entry is at or after `time_ns` (`size` if none).
    pub async fn first_seq_at(&self, time_ns: i64, size: u64) -> Result<u64, ReadError> {
        Ok(self.store.first_seq_at(time_ns, size).await?)
    }

    /// Traces bound by telemetry committed with entries `after < seq <= upto`, each once with
    /// the subject it was first bound to, in binding order.
    pub async fn bound_traces(
        &self,
        after: u64,
        upto: u64,
    ) -> Result<Vec<([u8; 16], String)>, ReadError> {
        Ok(self.store.bound_traces(after, upto).await?)
    }

    /// The latest observation earlier imports of Conductor run `run_id` recorded.
    pub async fn last_observation(
        &self,
        run_id: &str,
    ) -> Result<Option<LastObservation>, ReadError> {
        Ok(self
            .store
            .last_observation(run_id)
            .await?
            .map(|(run, change_id, deleted)| LastObservation {
                change_id: change_id.unwrap_or_else(|| run_id.to_owned()),
                run,
                deleted,
            }))
    }

    /// Conductor runs the token-less sender `sent_by` (a reconciler) observed since
    /// `since_ns`, with ids after `after` (at most `limit`, by id).
    pub async fn observed_runs(
        &self,
        sent_by: &str,
        after: &str,
        since_ns: i64,
        limit: u32,
    ) -> Result<Vec<String>, ReadError> {
        Ok(self
            .store
            .observed_runs(sent_by, after, since_ns, limit)
            .await?)
    }

    /// The task ids earlier imports of Conductor run `run_id` recorded.
    pub async fn imported_task_ids(&self, run_id: &str) -> Result<Vec<String>, ReadError> {
        Ok(self.store.imported_task_ids(run_id).await?)
    }
}
