//! Keeping a site as an ordinary object when a pool this node leaves stops serving it.

use std::sync::Arc;

use kith_crdt::Key;

use super::{Found, Gateway};

impl Gateway {
    /// Writes the served version of this identity's site `name` in `pool` (a pool this node
    /// may be leaving) into a folder under `scratch`, every file checked against its hash, and
    /// stores it as an ordinary object labelled `site NAME, version N`; returns its id.
    pub(crate) async fn keep_site(
        &self,
        pool: Key,
        name: &str,
        scratch: &std::path::Path,
    ) -> Result<Key, String> {
        let view = self.pools.view_of(&pool).ok_or("no such pool")?;
        let me = self.pools.signer().author().key;
        let site = view
            .members
            .get(&me)
            .and_then(|m| m.sites.get(name))
            .ok_or_else(|| format!("you have no site `{name}` in this pool"))?;
        let version = site.served().ok_or_else(|| format!("site `{name}` serves no version"))?;
        let found = Found {
            pool,
            origin: super::Origin::Pool(view.clone()),
            access: site.access,
            version: version.clone(),
            number: site.current,
            name: name.to_string(),
            by_host: false,
        };
        let index = self.index(&found).await?;
        let dir = scratch.join(format!("{name}-{}", kith_node::keys::now_ms()));
        let root = dir.join(name);
        let result = async {
            for f in &index.files {
                let mut bytes = Vec::with_capacity(f.len as usize);
                for c in &f.chunks {
                    bytes.extend_from_slice(&self.chunk(&found, c).await?);
                }
                if blake3::hash(&bytes).as_bytes() != &*f.hash {
                    return Err(format!("file {} of site {name} does not match its hash", f.path));
                }
                let safe = std::path::Path::new(&f.path)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
                if !safe {
                    return Err(format!("site {name} names a file outside it: {}", f.path));
                }
                let path = root.join(&f.path);
                std::fs::create_dir_all(path.parent().unwrap_or(&root))
                    .and_then(|()| std::fs::write(&path, &bytes))
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            }
            std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
            let label = std::path::PathBuf::from(format!("site {name}, version {}", site.current));
            let store = self.node.store().clone();
            let r = tokio::task::spawn_blocking(move || store.put_as(&root, Some(&label), None))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("cannot store site {name}: {e}"))?;
            Ok(r.id.0)
        }
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        result
    }
}

/// Keeps sites as objects for the replicator when a pool stops serving them (see
/// [`kith_pools::leave::SiteKeeper`]), writing them under `scratch` on the way.
#[derive(Debug)]
pub struct SiteKeeper {
    /// The gateway that reads sites.
    pub gateway: Arc<Gateway>,
    /// A folder in the home for the files on their way into the store.
    pub scratch: std::path::PathBuf,
}

impl kith_pools::leave::SiteKeeper for SiteKeeper {
    fn keep<'a>(
        &'a self,
        pool: Key,
        name: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Key, String>> + Send + 'a>> {
        Box::pin(self.gateway.keep_site(pool, name, &self.scratch))
    }
}
