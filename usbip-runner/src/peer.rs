//! Who is on the other end of a connection. The key serves its owner: the runner's own user and
//! root (who can read the state anyway), and nobody else unless asked.
//!
//! A Unix socket names its peer's uid (SO_PEERCRED). A TCP connection from this machine does
//! too, through the kernel's socket table: sock_diag (what `ss -e` reads) looks the client's own
//! socket up by the connection's addresses and ports and reports the uid that created it. That
//! is the user who ran `usbip attach` (root: the tool hands its socket to the kernel), or who
//! started QEMU (its user networking connects from the QEMU process). A peer whose socket is not
//! in this machine's table (this network namespace) is remote, and has no uid at all.
//!
//! sock_diag's TCP part is a module (`tcp_diag`) that a guest or a container may lack, and the
//! kernel then answers "no such socket" for every socket: so when the client's socket is not
//! found, the runner looks its own end of the connection up too, and if that is not found either
//! it reads the same table from `/proc/net/tcp` (or `tcp6`) instead, slower (the whole table)
//! but always there.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::Duration;

use rustix::net::{netlink, sockopt, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

/// The other end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A process on this machine, running as `uid`.
    Local { uid: u32 },
    /// Not on this machine (or in another network namespace): no uid to check.
    Remote,
}

/// Whom the runner serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The runner's user: the owner of its state.
    pub owner: u32,
    /// Serve every local user, not only the owner and root (`--allow-other-users`).
    pub other_users: bool,
    /// Serve peers on other machines (`--listen-remote`).
    pub remote: bool,
}

impl Policy {
    /// The owner and root only: what the control socket always serves, and USB/IP by default.
    pub fn owner_only() -> Self {
        Self {
            owner: own_uid(),
            other_users: false,
            remote: false,
        }
    }

    /// Why `peer` is refused, or `None` if it is served.
    pub fn refusal(&self, peer: Peer) -> Option<String> {
        match peer {
            Peer::Local { uid } if uid == self.owner || uid == 0 || self.other_users => None,
            Peer::Local { uid } => Some(format!(
                "uid {uid} is another user: the key serves its owner (uid {}) and root",
                self.owner
            )),
            Peer::Remote if self.remote => None,
            Peer::Remote => Some("the peer is not on this machine".into()),
        }
    }
}

/// The runner's user: files it creates are this uid's, so this is the owner of the key.
pub fn own_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The uid of a Unix socket's peer (SO_PEERCRED: the peer's credentials when it connected).
pub fn unix_peer_uid(stream: &impl AsFd) -> io::Result<u32> {
    Ok(sockopt::socket_peercred(stream)?.uid.as_raw())
}

/// The peer of a TCP connection this process accepted.
pub fn tcp_peer(stream: &TcpStream) -> io::Result<Peer> {
    lookup(stream.peer_addr()?, stream.local_addr()?)
}

/// The client end of the connection `client` → `server`, in this machine's socket table.
fn lookup(client: SocketAddr, server: SocketAddr) -> io::Result<Peer> {
    // An IPv4 client of a dual-stack listener shows up as ::ffff:a.b.c.d; its own socket is IPv4.
    let unmap = |addr: SocketAddr| match addr.ip() {
        IpAddr::V6(ip) => ip
            .to_ipv4_mapped()
            .map_or(addr, |ip| SocketAddr::new(ip.into(), addr.port())),
        IpAddr::V4(_) => addr,
    };
    let (client, server) = (unmap(client), unmap(server));
    let found = match diag(client, server) {
        Ok(Some(socket)) => Some(socket),
        // Our own end is surely there: if sock_diag finds it, it works, and the client is not here.
        Ok(None) if diag(server, client)?.is_some() => None,
        Ok(None) => proc_net_tcp(client, server)?,
        // No sock_diag to ask at all: qemu-user emulates only a few netlink protocols
        // (EPROTONOSUPPORT), a sandbox may refuse AF_NETLINK. The kernel's table is the same in
        // /proc, and not finding the client there refuses it as a remote peer.
        Err(error) if no_sock_diag(&error) => proc_net_tcp(client, server)?,
        Err(error) => return Err(error),
    };
    match found {
        None => Ok(Peer::Remote),
        Some(socket) if socket.established && socket.inode != 0 => {
            Ok(Peer::Local { uid: socket.uid })
        }
        // TIME_WAIT or orphaned: the client has closed it, and such entries carry no owner.
        Some(_) => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the peer closed its socket",
        )),
    }
}

/// Whether `error`, from opening a sock_diag socket, means this system offers none.
fn no_sock_diag(error: &io::Error) -> bool {
    use rustix::io::Errno;
    [
        Errno::PROTONOSUPPORT,
        Errno::AFNOSUPPORT,
        Errno::NOSYS,
        Errno::ACCESS,
        Errno::PERM,
    ]
    .iter()
    .any(|errno| error.raw_os_error() == Some(errno.raw_os_error()))
}

/// What sock_diag says about one TCP socket.
struct Diag {
    established: bool,
    uid: u32,
    /// 0 when no process holds it (orphaned, or a TIME_WAIT entry).
    inode: u32,
}

// linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h, netinet/tcp.h.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const IPPROTO_TCP: u8 = 6;
const TCP_ESTABLISHED: u8 = 1;
const NLMSG_HEADER: usize = 16;
/// inet_diag_req_v2: family, protocol, ext, pad, states, then the inet_diag_sockid.
const REQUEST: usize = 8 + SOCKID;
/// inet_diag_sockid: ports, two 16-byte addresses, interface, cookie.
const SOCKID: usize = 4 + 16 + 16 + 4 + 8;
/// inet_diag_msg: family, state, timer, retrans, sockid, expires, rqueue, wqueue, uid, inode.
const UID_AT: usize = 4 + SOCKID + 12;

/// Ask sock_diag for the TCP socket whose own address is `local` and whose peer is `remote`.
fn diag(local: SocketAddr, remote: SocketAddr) -> io::Result<Option<Diag>> {
    let request = diag_request(local, remote);
    let socket = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(netlink::SOCK_DIAG),
    )?;
    sockopt::set_socket_timeout(
        &socket,
        sockopt::Timeout::Recv,
        Some(Duration::from_secs(2)),
    )?;
    rustix::net::sendto(
        &socket,
        &request,
        SendFlags::empty(),
        &netlink::SocketAddrNetlink::new(0, 0),
    )?;
    let mut reply = [0u8; 512];
    let (len, _) = rustix::net::recv(&socket, &mut reply[..], RecvFlags::empty())?;
    parse_reply(&reply[..len])
}

/// The socket whose own address is `local` and whose peer is `remote`, in `/proc/net/tcp(6)`.
fn proc_net_tcp(local: SocketAddr, remote: SocketAddr) -> io::Result<Option<Diag>> {
    let table = match local {
        SocketAddr::V4(_) => "/proc/net/tcp",
        SocketAddr::V6(_) => "/proc/net/tcp6",
    };
    Ok(find_in_table(
        &std::fs::read_to_string(table)?,
        local,
        remote,
    ))
}

/// A line of the table: `sl local rem st queues timer retransmits uid timeout inode ...`, each
/// address the kernel's words in hex as this machine stores them (`0100007F:0CA8` is
/// 127.0.0.1:3240 here).
fn find_in_table(table: &str, local: SocketAddr, remote: SocketAddr) -> Option<Diag> {
    let hex = |addr: SocketAddr| {
        let words: Vec<u32> = match addr.ip() {
            IpAddr::V4(ip) => vec![u32::from_ne_bytes(ip.octets())],
            IpAddr::V6(ip) => ip
                .octets()
                .chunks(4)
                .map(|w| u32::from_ne_bytes([w[0], w[1], w[2], w[3]]))
                .collect(),
        };
        let words: String = words.iter().map(|w| format!("{w:08X}")).collect();
        format!("{words}:{:04X}", addr.port())
    };
    let (local, remote) = (hex(local), hex(remote));
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&local.as_str()) || fields.get(2) != Some(&remote.as_str()) {
            return None;
        }
        Some(Diag {
            established: u8::from_str_radix(fields.get(3)?, 16).ok()? == TCP_ESTABLISHED,
            uid: fields.get(7)?.parse().ok()?,
            inode: fields.get(9)?.parse().ok()?,
        })
    })
}

fn diag_request(local: SocketAddr, remote: SocketAddr) -> Vec<u8> {
    let family = match local {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let mut out = Vec::with_capacity(NLMSG_HEADER + REQUEST);
    out.extend_from_slice(&((NLMSG_HEADER + REQUEST) as u32).to_ne_bytes());
    out.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    // No NLM_F_DUMP: one socket, found by its addresses (the kernel's own lookup).
    out.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    out.extend_from_slice(&1u32.to_ne_bytes()); // sequence number
    out.extend_from_slice(&0u32.to_ne_bytes()); // to the kernel
    out.push(family.as_raw() as u8);
    out.push(IPPROTO_TCP);
    out.extend_from_slice(&[0, 0]); // no extensions, pad
    out.extend_from_slice(&u32::MAX.to_ne_bytes()); // any state
    out.extend_from_slice(&local.port().to_be_bytes());
    out.extend_from_slice(&remote.port().to_be_bytes());
    for addr in [local, remote] {
        let mut bytes = [0u8; 16];
        match addr.ip() {
            IpAddr::V4(ip) => bytes[..4].copy_from_slice(&ip.octets()),
            IpAddr::V6(ip) => bytes = ip.octets(),
        }
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    out.extend_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
    out
}

fn parse_reply(reply: &[u8]) -> io::Result<Option<Diag>> {
    let short = || io::Error::new(io::ErrorKind::InvalidData, "short sock_diag reply");
    let header = reply.get(..NLMSG_HEADER).ok_or_else(short)?;
    let kind = u16::from_ne_bytes([header[4], header[5]]);
    let body = &reply[NLMSG_HEADER..];
    if kind == NLMSG_ERROR {
        let errno = i32::from_ne_bytes(
            body.get(..4)
                .ok_or_else(short)?
                .try_into()
                .unwrap_or([0; 4]),
        );
        return match -errno {
            0 => Err(short()),
            e if e == rustix::io::Errno::NOENT.raw_os_error() => Ok(None),
            e => Err(io::Error::from_raw_os_error(e)),
        };
    }
    if kind != SOCK_DIAG_BY_FAMILY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected sock_diag reply type {kind}"),
        ));
    }
    let field = |at: usize| {
        body.get(at..at + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(short)
    };
    Ok(Some(Diag {
        established: *body.get(1).ok_or_else(short)? == TCP_ESTABLISHED,
        uid: field(UID_AT)?,
        inode: field(UID_AT + 4)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_loopback_client_is_this_user() {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(listener) = TcpListener::bind(bind) else {
                continue; // no IPv6 on this machine
            };
            let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (server, _) = listener.accept().unwrap();
            assert_eq!(tcp_peer(&server).unwrap(), Peer::Local { uid: own_uid() });
            drop(client);
        }
    }

    #[test]
    fn a_closed_client_is_not_served() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        drop(client);
        std::thread::sleep(Duration::from_millis(50));
        // The closed end is in FIN_WAIT2, orphaned: no process holds it and its entry says
        // nothing about who made it, so it is not taken for a local user, nor for root.
        assert!(tcp_peer(&server).is_err());
    }

    #[test]
    fn proc_net_tcp_agrees_with_sock_diag() {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(listener) = TcpListener::bind(bind) else {
                continue;
            };
            let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (server, _) = listener.accept().unwrap();
            let (a, b) = (server.peer_addr().unwrap(), server.local_addr().unwrap());
            let from_proc = proc_net_tcp(a, b).unwrap().expect("in /proc/net/tcp");
            let from_diag = diag(a, b).unwrap().expect("in sock_diag");
            assert!(from_proc.established && from_diag.established);
            assert_eq!(
                (from_proc.uid, from_proc.inode),
                (from_diag.uid, from_diag.inode)
            );
            assert_eq!(from_proc.uid, own_uid());
            drop(client);
        }
    }

    #[test]
    fn the_table_is_read_as_the_kernel_writes_it() {
        // As on x86 (little-endian): 127.0.0.1:3240 <- 127.0.0.1:40000, uid 1000; then TIME_WAIT.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:9C40 0100007F:0CA8 01 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0 20 4 30 10 -1
   1: 0100007F:9C41 0100007F:0CA8 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0";
        if cfg!(target_endian = "little") {
            let server: SocketAddr = "127.0.0.1:3240".parse().unwrap();
            let open = find_in_table(table, "127.0.0.1:40000".parse().unwrap(), server).unwrap();
            assert!(open.established && open.uid == 1000 && open.inode == 4242);
            let gone = find_in_table(table, "127.0.0.1:40001".parse().unwrap(), server).unwrap();
            assert!(!gone.established && gone.inode == 0);
            assert!(find_in_table(table, "127.0.0.1:40002".parse().unwrap(), server).is_none());
        }
    }

    #[test]
    fn a_connection_not_in_the_table_is_remote() {
        // Addresses no socket here has: documentation ranges (RFC 5737).
        let client: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let server: SocketAddr = "198.51.100.9:3240".parse().unwrap();
        assert_eq!(lookup(client, server).unwrap(), Peer::Remote);
    }

    #[test]
    fn policy() {
        let owner = Policy {
            owner: 1000,
            other_users: false,
            remote: false,
        };
        assert_eq!(owner.refusal(Peer::Local { uid: 1000 }), None);
        assert_eq!(owner.refusal(Peer::Local { uid: 0 }), None);
        assert!(owner.refusal(Peer::Local { uid: 1001 }).is_some());
        assert!(owner.refusal(Peer::Remote).is_some());
        let open = Policy {
            other_users: true,
            remote: true,
            ..owner
        };
        assert_eq!(open.refusal(Peer::Local { uid: 1001 }), None);
        assert_eq!(open.refusal(Peer::Remote), None);
    }
}
