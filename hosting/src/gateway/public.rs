//! What browser peers read: the public sites with their files, and chunks of them.

use bytes::Bytes;
use kith_pools::Access;

use super::{Found, Gateway, GatewayRef, Origin};
use crate::site::{ChunkRef, FileEntry};

impl Gateway {
    /// The public sites of this node's pools with their files (at most 1000 listed per site),
    /// for a browser peer.
    pub async fn public_sites(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let views = self.pools.views();
        for (pool, view) in views.iter() {
            for (owner, name, site) in view.sites() {
                let winner = view.site(name).is_some_and(|(o, _)| o == *owner);
                let Some(version) =
                    site.served().filter(|_| winner && site.access == Access::Public)
                else {
                    continue;
                };
                let found = Found {
                    pool: *pool,
                    origin: Origin::Pool(view.clone()),
                    access: site.access,
                    version: version.clone(),
                    number: site.current,
                    name: name.clone(),
                    by_host: false,
                };
                let files: Vec<serde_json::Value> = match self.index(&found).await {
                    Ok(i) => i
                        .files
                        .iter()
                        .take(1000)
                        .map(|f| serde_json::json!({ "path": f.path, "len": f.len, "type": f.content_type }))
                        .collect(),
                    Err(e) => {
                        tracing::warn!(site = %name, error = %e, "cannot open a site's index");
                        continue;
                    }
                };
                out.push(serde_json::json!({ "name": name, "files": files }));
            }
        }
        out
    }

    /// A file of a public site, and the pool it is read through.
    pub(crate) async fn public_file(
        &self,
        site: &str,
        path: &str,
    ) -> Result<(FileEntry, Origin), String> {
        let found = self.find(site, None).ok_or_else(|| format!("no site `{site}` here"))?;
        if found.access != Access::Public {
            return Err(format!("`{site}` is for the pool's members"));
        }
        let index = self.index(&found).await?;
        let f = index.file(path).ok_or_else(|| format!("`{site}` has no file `{path}`"))?;
        Ok((f.clone(), found.origin))
    }

    /// A chunk of a file, opened (from the cache, the store or a peer).
    pub(crate) async fn chunk_in(&self, origin: &Origin, c: &ChunkRef) -> Result<Bytes, String> {
        self.chunk_for(&GatewayRef { origin: origin.clone(), site: None }, c).await
    }
}
