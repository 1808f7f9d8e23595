//! On the local stack, each role connects as its own principal
//! (`<namespace>orelink-<role>`, made by `topology apply`) instead of the
//! stack's superuser, so local runs live under the same ACLs as a cluster.
//! Explicit credentials (any user but the stack's admin) are left alone.

use orelink_platform::Config;
use orelink_platform::access_apply::read_users;

/// Where `topology apply` keeps the principals' passwords on the local stack.
pub fn users_file() -> std::path::PathBuf {
    orelink_platform::config::stack_credentials_path().with_file_name("principals.toml")
}

/// `cfg` with the role's own Kafka credentials, when the local stack has them.
pub fn as_role(cfg: &Config, role: &str) -> Config {
    let mut c = cfg.clone();
    if !c.kafka.security_protocol.starts_with("sasl") || c.kafka.username != orelink_stack::KAFKA_ADMIN {
        return c;
    }
    let user = format!("{}orelink-{role}", c.namespace);
    match read_users(&users_file()) {
        Ok(users) => match users.get(&user) {
            Some(pw) => {
                tracing::info!(%user, "connecting as the role's own principal");
                c.kafka.username = user;
                c.kafka.password = pw.clone();
            }
            None => tracing::warn!(%user, "no such principal yet (run `orelink topology apply`): connecting as the stack's superuser"),
        },
        Err(e) => tracing::warn!(error = %e, "cannot read the principals file: connecting as the stack's superuser"),
    }
    c
}
