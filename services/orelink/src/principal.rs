//! Each role connects as its own principal (`<namespace>orelink-<role>`,
//! made by `topology apply`), never silently as the superuser: with the
//! stack's admin credentials configured, a role takes its principal's
//! password from the principals file (`kafka.principals_file`, by default the
//! local stack's), and refuses to start when it has none, unless the operator
//! said `--as-admin`. Explicit credentials (any user but the admin) are left
//! alone: on Kubernetes each role's Secret names its own user.

use orelink_platform::Config;
use orelink_platform::access_apply::read_users;
use std::path::PathBuf;

/// Where `topology apply` keeps the principals' passwords on the local stack.
pub fn users_file() -> PathBuf {
    orelink_platform::config::stack_credentials_path().with_file_name("principals.toml")
}

/// The principals file this config names (the local stack's when unset).
pub fn users_file_of(cfg: &Config) -> PathBuf {
    match cfg.kafka.principals_file.as_str() {
        "" => users_file(),
        path => PathBuf::from(path),
    }
}

/// A role that would run as the superuser without being told to.
#[derive(Debug, thiserror::Error)]
#[error(
    "role {role} has no principal of its own ({user}: {why}); it will not run as the superuser {admin} unless told to. \
     Run `orelink topology apply` to make its principal, set kafka.username and kafka.password to it, \
     or start with --as-admin to run it as {admin} knowingly"
)]
pub struct NoPrincipal {
    role: String,
    user: String,
    why: String,
    admin: String,
}

/// `cfg` with the role's own Kafka credentials. `as_admin`: the operator
/// chose to run it as the superuser when it has no principal.
pub fn as_role(cfg: &Config, role: &str, as_admin: bool) -> Result<Config, NoPrincipal> {
    let mut c = cfg.clone();
    if !c.kafka.security_protocol.starts_with("sasl") || c.kafka.username != orelink_stack::KAFKA_ADMIN {
        return Ok(c);
    }
    let user = format!("{}orelink-{role}", c.namespace);
    let file = users_file_of(cfg);
    let why = match read_users(&file) {
        Ok(users) => match users.get(&user) {
            Some(pw) => {
                tracing::info!(%user, "connecting as the role's own principal");
                c.kafka.username = user;
                c.kafka.password = pw.clone();
                return Ok(c);
            }
            None => format!("not in {}", file.display()),
        },
        Err(e) => e.to_string(),
    };
    if as_admin {
        tracing::warn!(%user, reason = %why, admin = orelink_stack::KAFKA_ADMIN, "--as-admin: the role runs as the superuser, outside the topology's ACLs");
        return Ok(c);
    }
    Err(NoPrincipal { role: role.to_owned(), user, why, admin: orelink_stack::KAFKA_ADMIN.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use orelink_platform::config::{Secret, Sources};

    fn admin_cfg(principals_file: &std::path::Path) -> Config {
        let env = vec![
            ("ORELINK__KAFKA__SECURITY_PROTOCOL".into(), "sasl_plaintext".into()),
            ("ORELINK__KAFKA__USERNAME".into(), orelink_stack::KAFKA_ADMIN.into()),
            ("ORELINK__KAFKA__PASSWORD".into(), "admin-secret".into()),
            ("ORELINK__KAFKA__PRINCIPALS_FILE".into(), principals_file.display().to_string()),
            ("ORELINK__NAMESPACE".into(), "t.".into()),
        ];
        Config::load(&Sources { file: None, env, stack: None }).unwrap()
    }

    #[test]
    fn a_role_without_its_principal_refuses_the_superuser_unless_told() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("principals.toml");
        let cfg = admin_cfg(&file);
        let refused = as_role(&cfg, "fanout", false).unwrap_err().to_string();
        assert!(refused.contains("role fanout has no principal of its own (t.orelink-fanout") && refused.contains("--as-admin"), "{refused}");
        let knowingly = as_role(&cfg, "fanout", true).unwrap();
        assert_eq!(knowingly.kafka.username, orelink_stack::KAFKA_ADMIN);

        std::fs::write(&file, "[users]\n\"t.orelink-fanout\" = \"fanout-secret\"\n").unwrap();
        let own = as_role(&cfg, "fanout", false).unwrap();
        assert_eq!((own.kafka.username.as_str(), own.kafka.password.clone()), ("t.orelink-fanout", Secret::new("fanout-secret")));
        assert!(as_role(&cfg, "view", false).is_err(), "another role's principal is not this one's");
    }

    #[test]
    fn explicit_credentials_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = admin_cfg(&dir.path().join("none.toml"));
        cfg.kafka.username = "orelink-fanout".into();
        assert_eq!(as_role(&cfg, "fanout", false).unwrap().kafka.username, "orelink-fanout");
    }
}
