//! Organisations: created, found by id or by name, listed, and the default one.

use crate::ids::OrgId;
use crate::store::{Organisation, Store, StoreError};
use sqlx::Row;

impl Store {
    pub async fn organisation_by_name(&self, name: &str) -> Result<Organisation, StoreError> {
        let row = sqlx::query("SELECT id, name FROM organisations WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("organisation `{name}` does not exist")))?;
        Ok(Organisation {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
        })
    }

    pub async fn default_org(&self) -> Result<OrgId, StoreError> {
        Ok(self.organisation_by_name("default").await?.id)
    }

    pub async fn create_organisation(&self, name: &str) -> Result<OrgId, StoreError> {
        let id: OrgId = sqlx::query_scalar(
            "INSERT INTO organisations (name, created_at) VALUES ($1, $2) RETURNING id",
        )
        .bind(name)
        .bind(crate::clock::now_ms())
        .fetch_one(&self.write)
        .await
        .map_err(|e| {
            StoreError::from_unique(e, || {
                format!("an organisation named `{name}` already exists")
            })
        })?;
        Ok(id)
    }

    pub async fn organisation(&self, id: OrgId) -> Result<Organisation, StoreError> {
        let row = sqlx::query("SELECT id, name FROM organisations WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("organisation {} does not exist", id)))?;
        Ok(Organisation {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
        })
    }

    pub async fn organisations(&self) -> Result<Vec<Organisation>, StoreError> {
        let rows = sqlx::query("SELECT id, name FROM organisations ORDER BY id")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Organisation {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                })
            })
            .collect()
    }
}
