//! LAN discovery with mDNS (mdns-sd): each node announces `_kith._udp.local.` with its node id
//! (z32) as the instance name and its addresses in the TXT record, and browses for the others.
//!
//! The TXT record carries only `v` (protocol version) and `a` (addresses): never pool names or
//! anything about the person. Probing is off: instance names are public keys, so they cannot
//! collide, and probing would add a second before a node is visible.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;

use iroh::EndpointId;
use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio_util::sync::CancellationToken;

use super::peers::PeerTable;

/// The service type kith announces.
pub const SERVICE: &str = "_kith._udp.local.";
/// Protocol version in the TXT record.
const TXT_VERSION: &str = "1";
/// Addresses announced at most (a TXT value is at most 255 bytes).
const MAX_ADDRS: usize = 6;

/// Which interfaces mDNS uses.
#[derive(Debug, Clone, Default)]
pub struct MdnsConfig {
    /// Off entirely.
    pub disabled: bool,
    /// Only these interfaces (by name); empty means every interface.
    pub interfaces: Vec<String>,
}

/// Why mDNS could not start.
#[derive(Debug, thiserror::Error)]
#[error("mDNS: {0}")]
pub struct MdnsError(String);

/// A running mDNS announcer and browser.
pub struct Mdns {
    daemon: ServiceDaemon,
    me: EndpointId,
    announced: Mutex<Option<String>>,
    /// Host names announced for sites: name → the service's full name.
    names: Mutex<std::collections::BTreeMap<String, String>>,
}

/// The service type site names are announced under (so `NAME.local` resolves, and Bonjour
/// browsers list the site).
pub const HTTP_SERVICE: &str = "_http._tcp.local.";

impl std::fmt::Debug for Mdns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mdns").field("me", &self.me.fmt_short().to_string()).finish()
    }
}

impl Mdns {
    /// Starts the daemon and a browser feeding `peers` until `cancel`.
    pub fn start(
        me: EndpointId,
        cfg: &MdnsConfig,
        peers: Arc<PeerTable>,
        cancel: CancellationToken,
    ) -> Result<Arc<Mdns>, MdnsError> {
        let err = |e: mdns_sd::Error| MdnsError(e.to_string());
        let daemon = ServiceDaemon::new().map_err(err)?;
        if !cfg.interfaces.is_empty() {
            daemon.disable_interface(IfKind::All).map_err(err)?;
            for name in &cfg.interfaces {
                let kind =
                    if name == "lo" { IfKind::LoopbackV4 } else { IfKind::Name(name.clone()) };
                daemon.enable_interface(kind).map_err(err)?;
            }
        }
        let events = daemon.browse(SERVICE).map_err(err)?;
        let mdns = Arc::new(Mdns {
            daemon,
            me,
            announced: Mutex::new(None),
            names: Mutex::new(Default::default()),
        });
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    ev = events.recv_async() => match ev {
                        Ok(ev) => handle(&peers, me, ev),
                        Err(_) => break,
                    },
                }
            }
        });
        Ok(mdns)
    }

    /// Announces (or re-announces) this node at `addrs`.
    pub fn publish(&self, addrs: &[SocketAddr]) {
        let addrs: Vec<SocketAddr> = addrs.iter().copied().take(MAX_ADDRS).collect();
        let Some(port) = addrs.first().map(|a| a.port()) else { return };
        let ips: Vec<IpAddr> = addrs.iter().map(|a| a.ip()).collect();
        let list = addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
        let name = self.me.to_z32();
        let host = format!("{name}.local.");
        let props = [("v", TXT_VERSION), ("a", list.as_str())];
        match ServiceInfo::new(SERVICE, &name, &host, &ips[..], port, &props[..]) {
            Ok(mut info) => {
                info.set_requires_probe(false);
                let fullname = info.get_fullname().to_string();
                if let Err(e) = self.daemon.register(info) {
                    tracing::warn!(error = %e, "mDNS announce failed");
                    return;
                }
                *self.announced.lock().unwrap_or_else(|p| p.into_inner()) = Some(fullname);
                tracing::debug!(addrs = %list, "announced on mDNS");
            }
            Err(e) => tracing::warn!(error = %e, "cannot build the mDNS record"),
        }
    }

    /// Answers for `NAME.local` with this node's addresses on every interface mDNS uses, and
    /// announces an HTTP service on `port` there. Every node serving a site does this, so any of
    /// them may answer.
    pub fn publish_name(&self, name: &str, port: u16) -> Result<(), MdnsError> {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if names.contains_key(name) {
            return Ok(());
        }
        // One instance per node: instance names must be unique on the LAN.
        let instance = format!("{name} on {}", self.me.fmt_short());
        let host = format!("{name}.local.");
        let props = [("path", "/")];
        let no_ips: &[IpAddr] = &[];
        let mut info = ServiceInfo::new(HTTP_SERVICE, &instance, &host, no_ips, port, &props[..])
            .map_err(|e| MdnsError(e.to_string()))?
            .enable_addr_auto();
        info.set_requires_probe(false);
        let fullname = info.get_fullname().to_string();
        self.daemon.register(info).map_err(|e| MdnsError(e.to_string()))?;
        names.insert(name.to_string(), fullname);
        Ok(())
    }

    /// Stops answering for `NAME.local`.
    pub fn unpublish_name(&self, name: &str) {
        let full = self.names.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
        if let Some(full) = full {
            let _ = self.daemon.unregister(&full);
        }
    }

    /// The names this node answers for.
    pub fn published_names(&self) -> Vec<String> {
        self.names.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    /// Withdraws the announcement and stops the daemon.
    pub fn shutdown(&self) {
        if let Some(name) = self.announced.lock().unwrap_or_else(|p| p.into_inner()).take()
            && let Ok(rx) = self.daemon.unregister(&name)
        {
            let _ = rx.recv_timeout(std::time::Duration::from_millis(500));
        }
        let _ = self.daemon.shutdown();
    }
}

/// How long `resolve` keeps listening after the first answer.
const RESOLVE_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Resolves `host` (such as `bakery.local`) over mDNS: the addresses heard within `timeout`
/// (within half a second of the first answer: every node serving a name answers at once).
pub fn resolve(host: &str, timeout: std::time::Duration) -> Result<Vec<IpAddr>, MdnsError> {
    let err = |e: mdns_sd::Error| MdnsError(e.to_string());
    let daemon = ServiceDaemon::new().map_err(err)?;
    let host = if host.ends_with('.') { host.to_string() } else { format!("{host}.") };
    let rx = daemon.resolve_hostname(&host, Some(timeout.as_millis() as u64)).map_err(err)?;
    let mut deadline = std::time::Instant::now() + timeout;
    let mut out: Vec<IpAddr> = Vec::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(mdns_sd::HostnameResolutionEvent::AddressesFound(_, ips)) => {
                // Every node serving the name answers at once: wait a little for the others,
                // not the whole timeout.
                deadline = deadline.min(std::time::Instant::now() + RESOLVE_GRACE);
                for ip in ips {
                    let ip = ip.to_ip_addr();
                    if !out.contains(&ip) {
                        out.push(ip);
                    }
                }
            }
            Ok(mdns_sd::HostnameResolutionEvent::SearchTimeout(_))
            | Ok(mdns_sd::HostnameResolutionEvent::SearchStopped(_))
            | Err(_) => break,
            Ok(_) => {}
        }
    }
    let _ = daemon.shutdown();
    // What a phone on the LAN can use: not this machine's loopback, not link-local addresses
    // (fe80::, 169.254.*), unless there is nothing else.
    let lan = |ip: &IpAddr| {
        !ip.is_loopback()
            && match ip {
                IpAddr::V4(v4) => !v4.is_link_local(),
                IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
            }
    };
    if out.iter().any(lan) {
        out.retain(lan);
    }
    out.sort();
    Ok(out)
}

fn handle(peers: &PeerTable, me: EndpointId, ev: ServiceEvent) {
    match ev {
        ServiceEvent::ServiceResolved(info) => {
            let Some(id) = instance_id(&info.fullname) else { return };
            if id == me {
                return;
            }
            let txt = info.txt_properties.get_property_val_str("a").unwrap_or("");
            let mut addrs: Vec<SocketAddr> =
                txt.split(',').filter_map(|a| a.parse().ok()).take(MAX_ADDRS).collect();
            if addrs.is_empty() {
                addrs = info
                    .addresses
                    .iter()
                    .map(|ip| SocketAddr::new(ip.to_ip_addr(), info.port))
                    .collect();
            }
            if peers.upsert(id, &addrs, true, false) {
                tracing::debug!(peer = %id.fmt_short(), ?addrs, "found on mDNS");
            }
        }
        ServiceEvent::ServiceRemoved(_, fullname) => {
            if let Some(id) = instance_id(&fullname) {
                peers.mdns_gone(&id);
                tracing::debug!(peer = %id.fmt_short(), "left mDNS");
            }
        }
        _ => {}
    }
}

/// The node id in an instance's full name (`<z32>._kith._udp.local.`), if it is one.
fn instance_id(fullname: &str) -> Option<EndpointId> {
    let instance = fullname.strip_suffix(SERVICE)?.strip_suffix('.')?;
    EndpointId::from_z32(instance).ok()
}
