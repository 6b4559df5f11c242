//! Groups: named sets of users a publish can address.

use redis::AsyncCommands;

use super::RedisStore;
use crate::error::Result;
use crate::store::keys;

impl RedisStore {
    pub async fn add_members(&self, group: &str, users: &[String]) -> Result<()> {
        if !users.is_empty() {
            let _: () = self.conn().sadd(keys::group(group), users).await?;
        }
        Ok(())
    }

    pub async fn remove_member(&self, group: &str, user: &str) -> Result<bool> {
        let n: u64 = self.conn().srem(keys::group(group), user).await?;
        Ok(n > 0)
    }

    pub async fn members(&self, group: &str) -> Result<Vec<String>> {
        let mut members: Vec<String> = self.conn().smembers(keys::group(group)).await?;
        members.sort();
        Ok(members)
    }
}
