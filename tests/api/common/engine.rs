//! [`Engine`]: the Redis or Redis Cluster that the nodes of a multi-node test share.

use super::{Cluster, Mode, Redis};

/// One Redis or one Redis Cluster; stopped on drop (declare it before the nodes using it).
pub struct Engine {
    _redis: Option<Redis>,
    _cluster: Option<Cluster>,
    pub url: String,
}

impl Engine {
    /// Start the engine of `mode` (Redis or Cluster: embedded nodes share nothing).
    pub fn start(mode: Mode) -> Engine {
        match mode {
            Mode::Redis => {
                let redis = Redis::start();
                Engine {
                    url: redis.url(),
                    _redis: Some(redis),
                    _cluster: None,
                }
            }
            Mode::Cluster => {
                let cluster = Cluster::start(3, 0);
                Engine {
                    url: cluster.url(),
                    _redis: None,
                    _cluster: Some(cluster),
                }
            }
            Mode::Embedded => unreachable!("embedded nodes share nothing"),
        }
    }
}
