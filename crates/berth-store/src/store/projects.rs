//! Projects, tokens and stacks: the operator's objects.

use super::Store;
use crate::error::StoreError;
use crate::ids::new_id;
use crate::model::*;
use berth_core::time::now_millis;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::Row;

/// Random bytes behind a token secret: 20 bytes, 40 hex characters, 160
/// bits, far past guessing.
const SECRET_BYTES: usize = 20;

impl Store {
    // ----- projects and tokens (operator) -----------------------------------

    pub async fn create_project(&self, name: &str) -> Result<Project, StoreError> {
        let project = Project {
            id: new_id(),
            name: name.to_string(),
            created_at: now_millis(),
        };
        sqlx::query("INSERT INTO projects (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&project.id)
            .bind(&project.name)
            .bind(project.created_at)
            .execute(&mut *self.durable.acquire().await?)
            .await?;
        Ok(project)
    }

    pub async fn project(&self, id: &str) -> Result<Option<Project>, StoreError> {
        let row = sqlx::query("SELECT id, name, created_at FROM projects WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(project).transpose()
    }

    pub async fn projects(&self) -> Result<Vec<Project>, StoreError> {
        let rows = sqlx::query("SELECT id, name, created_at FROM projects ORDER BY created_at, id")
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(project).collect()
    }

    /// Creates a token for the project and returns it with its secret (shown
    /// only now; the store keeps its SHA-256). The secret is 40 characters
    /// from a CSPRNG, prefixed `bt_`. Unknown project → `UnknownProject`.
    pub async fn create_token(
        &self,
        project_id: &str,
        name: &str,
    ) -> Result<(TokenInfo, String), StoreError> {
        let secret = new_secret()?;
        let token = TokenInfo {
            id: new_id(),
            project_id: project_id.to_string(),
            name: name.to_string(),
            created_at: now_millis(),
            revoked_at: None,
        };
        // One statement that inserts only if the project exists: no window
        // between the check and the insert.
        let inserted = sqlx::query(
            "INSERT INTO tokens (id, project_id, name, secret_sha256, created_at)
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM projects WHERE id = $2)",
        )
        .bind(&token.id)
        .bind(&token.project_id)
        .bind(&token.name)
        .bind(secret_hash(&secret))
        .bind(token.created_at)
        .execute(&mut *self.durable.acquire().await?)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::UnknownProject(project_id.to_string()));
        }
        Ok((token, secret))
    }

    /// Revokes by token id; false if no such (unrevoked) token.
    pub async fn revoke_token(&self, token_id: &str) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(token_id)
                .bind(now_millis())
                .execute(&mut *self.durable.acquire().await?)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn tokens(&self, project_id: &str) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, project_id, name, created_at, revoked_at FROM tokens
             WHERE project_id = $1 ORDER BY created_at, id",
        )
        .bind(project_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(TokenInfo {
                    id: row.try_get("id")?,
                    project_id: row.try_get("project_id")?,
                    name: row.try_get("name")?,
                    created_at: row.try_get("created_at")?,
                    revoked_at: row.try_get("revoked_at")?,
                })
            })
            .collect()
    }

    /// The project a secret opens, if it is a live (unrevoked) token.
    ///
    /// Looked up by the secret's hash (a unique index), so the lookup costs
    /// the same whatever the secret and the store never holds secrets.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<String>, StoreError> {
        let project: Option<String> = sqlx::query_scalar(
            "SELECT project_id FROM tokens WHERE secret_sha256 = $1 AND revoked_at IS NULL",
        )
        .bind(secret_hash(secret))
        .fetch_optional(&self.read)
        .await?;
        Ok(project)
    }

    // ----- stacks (operator) ------------------------------------------------

    /// Creates or replaces the runtime → image mapping.
    pub async fn set_stack(
        &self,
        runtime: &str,
        image: &str,
        command: &[String],
    ) -> Result<Stack, StoreError> {
        let stack = Stack {
            runtime: runtime.to_string(),
            image: image.to_string(),
            command: command.to_vec(),
            updated_at: now_millis(),
        };
        let command = serde_json::to_string(&stack.command)
            .map_err(|e| super::rows::corrupt("stacks", e.to_string()))?;
        sqlx::query(
            "INSERT INTO stacks (runtime, image, command, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (runtime) DO UPDATE
             SET image = excluded.image, command = excluded.command,
                 updated_at = excluded.updated_at",
        )
        .bind(&stack.runtime)
        .bind(&stack.image)
        .bind(command)
        .bind(stack.updated_at)
        .execute(&mut *self.durable.acquire().await?)
        .await?;
        Ok(stack)
    }

    pub async fn stack(&self, runtime: &str) -> Result<Option<Stack>, StoreError> {
        let row = sqlx::query(
            "SELECT runtime, image, command, updated_at FROM stacks WHERE runtime = $1",
        )
        .bind(runtime)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(stack).transpose()
    }

    pub async fn stacks(&self) -> Result<Vec<Stack>, StoreError> {
        let rows =
            sqlx::query("SELECT runtime, image, command, updated_at FROM stacks ORDER BY runtime")
                .fetch_all(&self.read)
                .await?;
        rows.iter().map(stack).collect()
    }

    pub async fn remove_stack(&self, runtime: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM stacks WHERE runtime = $1")
            .bind(runtime)
            .execute(&mut *self.durable.acquire().await?)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

fn project(row: &AnyRow) -> Result<Project, StoreError> {
    Ok(Project {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    })
}

fn stack(row: &AnyRow) -> Result<Stack, StoreError> {
    let command: String = row.try_get("command")?;
    Ok(Stack {
        runtime: row.try_get("runtime")?,
        image: row.try_get("image")?,
        command: serde_json::from_str(&command)
            .map_err(|e| super::rows::corrupt("stacks", format!("command: {e}")))?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// `bt_` and 40 hex characters from the kernel's CSPRNG.
pub(super) fn new_secret() -> Result<String, StoreError> {
    let mut bytes = [0u8; SECRET_BYTES];
    let mut filled = 0;
    while filled < bytes.len() {
        match rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(errno) => {
                return Err(StoreError::Database(sqlx::Error::Io(
                    std::io::Error::from_raw_os_error(errno.raw_os_error()),
                )))
            }
        }
    }
    Ok(format!("bt_{}", hex::encode(bytes)))
}

/// The stored form of a secret: its SHA-256 in hex.
pub(super) fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}
