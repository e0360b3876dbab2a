//! The kTLS check: the kernel path OmniRelay's TLS termination will use.
//!
//! For each case (TLS 1.2 and 1.3; AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305) a rustls
//! client and server thread complete a handshake over loopback TCP, the session's traffic
//! secrets are extracted from rustls and handed to the kernel (`TCP_ULP "tls"`, then
//! `TLS_TX`/`TLS_RX`), and data crosses both ways through plain `read`/`write` on the
//! sockets. Two connections per case:
//!
//! - both ends in the kernel (kTLS to kTLS);
//! - the server end in the kernel and the client in userspace rustls, which proves that the
//!   kernel's records are real TLS, not just consistent with themselves (a proxy's peers are
//!   ordinary TLS clients).
//!
//! kTLS being active is asserted, not assumed: `getsockopt(TCP_ULP)` must return `tls`, and
//! the kernel's `/proc/net/tls_stat` software TX/RX counters must move by at least the
//! number of sockets switched.
//!
//! The handshake reads the socket one TLS record at a time, so rustls never buffers bytes
//! that arrive after the handshake: a TLS 1.3 client may send application data right after
//! its Finished, and those bytes must stay in the socket for the kernel to decrypt.
//!
//! On a kernel without `CONFIG_TLS` (`setsockopt(TCP_ULP, "tls")` fails with `ENOENT`), a
//! case returns [`Outcome::Unavailable`] with that reason: a skip, never a silent pass.

use std::{
    collections::BTreeMap,
    fmt,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail, ensure};
use rustls::{
    ClientConfig, ClientConnection, ConnectionTrafficSecrets, ExtractedSecrets, RootCertStore,
    ServerConfig, ServerConnection, SupportedCipherSuite,
    crypto::{CryptoProvider, ring},
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName},
};

/// A TLS protocol version the kernel can take over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

impl TlsVersion {
    /// The kernel's `tls_crypto_info.version` value.
    fn kernel(self) -> u16 {
        match self {
            TlsVersion::Tls12 => libc::TLS_1_2_VERSION,
            TlsVersion::Tls13 => libc::TLS_1_3_VERSION,
        }
    }

    fn rustls(self) -> &'static rustls::SupportedProtocolVersion {
        match self {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        }
    }

    fn protocol(self) -> rustls::ProtocolVersion {
        match self {
            TlsVersion::Tls12 => rustls::ProtocolVersion::TLSv1_2,
            TlsVersion::Tls13 => rustls::ProtocolVersion::TLSv1_3,
        }
    }
}

/// An AEAD the kernel implements for TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cipher {
    /// AES-128-GCM.
    Aes128Gcm,
    /// AES-256-GCM.
    Aes256Gcm,
    /// ChaCha20-Poly1305.
    Chacha20Poly1305,
}

/// One check: a protocol version and a cipher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    /// The name in result lines, e.g. `ktls_tls13_aes_128_gcm`.
    pub name: &'static str,
    /// Protocol version.
    pub version: TlsVersion,
    /// AEAD.
    pub cipher: Cipher,
}

/// Every case the check runs.
pub const CASES: [Case; 6] = [
    Case {
        name: "ktls_tls12_aes_128_gcm",
        version: TlsVersion::Tls12,
        cipher: Cipher::Aes128Gcm,
    },
    Case {
        name: "ktls_tls12_aes_256_gcm",
        version: TlsVersion::Tls12,
        cipher: Cipher::Aes256Gcm,
    },
    Case {
        name: "ktls_tls12_chacha20_poly1305",
        version: TlsVersion::Tls12,
        cipher: Cipher::Chacha20Poly1305,
    },
    Case {
        name: "ktls_tls13_aes_128_gcm",
        version: TlsVersion::Tls13,
        cipher: Cipher::Aes128Gcm,
    },
    Case {
        name: "ktls_tls13_aes_256_gcm",
        version: TlsVersion::Tls13,
        cipher: Cipher::Aes256Gcm,
    },
    Case {
        name: "ktls_tls13_chacha20_poly1305",
        version: TlsVersion::Tls13,
        cipher: Cipher::Chacha20Poly1305,
    },
];

impl Case {
    /// The case called `name`, if any.
    pub fn named(name: &str) -> Option<Case> {
        CASES.iter().copied().find(|c| c.name == name)
    }

    /// The rustls (ring provider) cipher suite of this case. TLS 1.2 suites are the ECDHE
    /// ECDSA ones, matching the P-256 certificate the check generates.
    pub fn suite(&self) -> SupportedCipherSuite {
        use rustls::crypto::ring::cipher_suite as cs;
        match (self.version, self.cipher) {
            (TlsVersion::Tls12, Cipher::Aes128Gcm) => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            (TlsVersion::Tls12, Cipher::Aes256Gcm) => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            (TlsVersion::Tls12, Cipher::Chacha20Poly1305) => {
                cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            }
            (TlsVersion::Tls13, Cipher::Aes128Gcm) => cs::TLS13_AES_128_GCM_SHA256,
            (TlsVersion::Tls13, Cipher::Aes256Gcm) => cs::TLS13_AES_256_GCM_SHA384,
            (TlsVersion::Tls13, Cipher::Chacha20Poly1305) => cs::TLS13_CHACHA20_POLY1305_SHA256,
        }
    }
}

/// What a case found.
#[derive(Debug)]
pub enum Outcome {
    /// kTLS carried the data both ways on both connections.
    Passed(Report),
    /// The kernel cannot do kTLS; the reason says why (a skip, not a pass).
    Unavailable(String),
}

/// Evidence of a passed case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Bytes the client sent on each connection.
    pub client_to_server: usize,
    /// Bytes the server sent on each connection.
    pub server_to_client: usize,
    /// Increase of `TlsTxSw` in `/proc/net/tls_stat` over the case.
    pub tx_sw_delta: u64,
    /// Increase of `TlsRxSw` in `/proc/net/tls_stat` over the case.
    pub rx_sw_delta: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} bytes client to server and {} back, on 2 connections; \
             tls_stat TlsTxSw +{}, TlsRxSw +{}",
            self.client_to_server, self.server_to_client, self.tx_sw_delta, self.rx_sw_delta
        )
    }
}

/// The kernel refused the TLS ULP: this kernel has no kTLS.
#[derive(Debug)]
struct Unavailable(String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

/// Payload sizes: more than one full TLS record (16 KiB) and an odd tail, so record
/// boundaries and partial reads are exercised.
const CLIENT_TO_SERVER: usize = 40_000 + 7;
const SERVER_TO_CLIENT: usize = 40_000 + 13;
/// Bound on every blocking socket operation, so a broken kernel path fails instead of
/// hanging (generous: the check also runs under TCG emulation).
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs one case.
pub fn run(case: &Case) -> anyhow::Result<Outcome> {
    let pki = Pki::new()?;
    let before = tls_stat();
    let mut sockets_switched = 0u64;
    for client_in_kernel in [true, false] {
        match connection(case, &pki, client_in_kernel) {
            Ok(()) => sockets_switched += if client_in_kernel { 2 } else { 1 },
            Err(e) => {
                if let Some(u) = e.downcast_ref::<Unavailable>() {
                    return Ok(Outcome::Unavailable(u.0.clone()));
                }
                let which = if client_in_kernel {
                    "kTLS client to kTLS server"
                } else {
                    "rustls client to kTLS server"
                };
                return Err(e.context(which));
            }
        }
    }
    let before = before.unwrap_or_default();
    let after = tls_stat().context("/proc/net/tls_stat is missing although kTLS worked")?;
    let delta = |key: &str| -> anyhow::Result<u64> {
        let now = after
            .get(key)
            .with_context(|| format!("/proc/net/tls_stat has no {key}: {after:?}"))?;
        Ok(now.saturating_sub(before.get(key).copied().unwrap_or(0)))
    };
    let report = Report {
        client_to_server: CLIENT_TO_SERVER,
        server_to_client: SERVER_TO_CLIENT,
        tx_sw_delta: delta("TlsTxSw")?,
        rx_sw_delta: delta("TlsRxSw")?,
    };
    // Other tests may switch sockets concurrently, so the counters can move further; they
    // must move at least once per socket this case switched.
    ensure!(
        report.tx_sw_delta >= sockets_switched && report.rx_sw_delta >= sockets_switched,
        "kernel TLS counters did not move for {sockets_switched} sockets: {report}"
    );
    Ok(Outcome::Passed(report))
}

/// A self-signed certificate for `localhost` and its key.
struct Pki {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Pki {
    fn new() -> anyhow::Result<Self> {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .context("generate a self-signed certificate")?;
        Ok(Pki {
            cert: certified.cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()),
        })
    }

    /// A ring provider offering only the case's cipher suite.
    fn provider(case: &Case) -> Arc<CryptoProvider> {
        let mut provider = ring::default_provider();
        let wanted = case.suite();
        provider
            .cipher_suites
            .retain(|s| s.suite() == wanted.suite());
        Arc::new(provider)
    }

    fn server_config(&self, case: &Case) -> anyhow::Result<Arc<ServerConfig>> {
        let mut config = ServerConfig::builder_with_provider(Self::provider(case))
            .with_protocol_versions(&[case.version.rustls()])
            .context("server protocol versions")?
            .with_no_client_auth()
            .with_single_cert(
                vec![self.cert.clone()],
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )
            .context("server certificate")?;
        config.enable_secret_extraction = true;
        // Tickets would arrive after the handshake as handshake records, which the kernel's
        // receive path does not take as data; the proxy hands them out before switching.
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }

    fn client_config(&self, case: &Case) -> anyhow::Result<Arc<ClientConfig>> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.cert.clone())
            .context("trust the self-signed certificate")?;
        let mut config = ClientConfig::builder_with_provider(Self::provider(case))
            .with_protocol_versions(&[case.version.rustls()])
            .context("client protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.enable_secret_extraction = true;
        Ok(Arc::new(config))
    }
}

/// A deterministic payload, different per direction so crossed wires are caught.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(u32::from(seed)) as u8)
        .collect()
}

/// One connection: the server always switches to kTLS; the client does too when
/// `client_in_kernel`, else it keeps rustls in userspace.
fn connection(case: &Case, pki: &Pki, client_in_kernel: bool) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind loopback listener")?;
    let addr = listener.local_addr()?;
    let server_config = pki.server_config(case)?;
    let client_config = pki.client_config(case)?;
    let case = *case;

    let server = std::thread::spawn(move || -> anyhow::Result<()> {
        let (mut sock, _) = listener.accept().context("accept")?;
        set_timeouts(&sock)?;
        let conn = ServerConnection::new(server_config).context("server connection")?;
        let conn = handshake(conn, &mut sock).context("server handshake")?;
        check_negotiated(&conn, &case)?;
        let secrets = conn
            .dangerous_extract_secrets()
            .context("extract server secrets")?;
        enable_ktls(&sock, secrets, case.version).context("server: enable kTLS")?;
        let got = read_exact_len(&mut sock, CLIENT_TO_SERVER).context("server: kTLS read")?;
        ensure!(
            got == pattern(CLIENT_TO_SERVER, 1),
            "server: data from the client differs after kTLS decryption"
        );
        sock.write_all(&pattern(SERVER_TO_CLIENT, 2))
            .context("server: kTLS write")?;
        Ok(())
    });

    let client = (|| -> anyhow::Result<()> {
        let mut sock = TcpStream::connect(addr).context("connect")?;
        set_timeouts(&sock)?;
        let name = ServerName::try_from("localhost")?;
        let conn = ClientConnection::new(client_config, name).context("client connection")?;
        let mut conn = handshake(conn, &mut sock).context("client handshake")?;
        check_negotiated(&conn, &case)?;
        if client_in_kernel {
            let secrets = conn
                .dangerous_extract_secrets()
                .context("extract client secrets")?;
            enable_ktls(&sock, secrets, case.version).context("client: enable kTLS")?;
            sock.write_all(&pattern(CLIENT_TO_SERVER, 1))
                .context("client: kTLS write")?;
            let got = read_exact_len(&mut sock, SERVER_TO_CLIENT).context("client: kTLS read")?;
            ensure!(
                got == pattern(SERVER_TO_CLIENT, 2),
                "client: data from the server differs after kTLS decryption"
            );
        } else {
            let mut tls = rustls::Stream::new(&mut conn, &mut sock);
            tls.write_all(&pattern(CLIENT_TO_SERVER, 1))
                .context("client: rustls write")?;
            let mut got = vec![0u8; SERVER_TO_CLIENT];
            tls.read_exact(&mut got)
                .context("client: rustls read of kernel-encrypted records")?;
            ensure!(
                got == pattern(SERVER_TO_CLIENT, 2),
                "client: data from the kTLS server differs after rustls decryption"
            );
        }
        Ok(())
    })();

    let server = server
        .join()
        .map_err(|_| anyhow!("server thread panicked"))?;
    // The server's error is the more telling one when both fail (the client then only sees
    // a closed connection); either way an Unavailable error must surface as such.
    match (server, client) {
        (Err(s), _) if s.downcast_ref::<Unavailable>().is_some() => Err(s),
        (_, Err(c)) if c.downcast_ref::<Unavailable>().is_some() => Err(c),
        (Err(s), _) => Err(s),
        (Ok(()), c) => c,
    }
}

fn set_timeouts(sock: &TcpStream) -> anyhow::Result<()> {
    sock.set_read_timeout(Some(IO_TIMEOUT))?;
    sock.set_write_timeout(Some(IO_TIMEOUT))?;
    sock.set_nodelay(true)?;
    Ok(())
}

fn read_exact_len(sock: &mut TcpStream, len: usize) -> anyhow::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    sock.read_exact(&mut buf)?;
    Ok(buf)
}

fn check_negotiated(conn: &rustls::CommonState, case: &Case) -> anyhow::Result<()> {
    let suite = conn
        .negotiated_cipher_suite()
        .context("no cipher suite negotiated")?;
    ensure!(
        suite.suite() == case.suite().suite(),
        "negotiated {:?}, wanted {:?}",
        suite.suite(),
        case.suite().suite()
    );
    ensure!(
        conn.protocol_version() == Some(case.version.protocol()),
        "negotiated {:?}, wanted {:?}",
        conn.protocol_version(),
        case.version
    );
    Ok(())
}

/// Largest TLS record on the wire: 2^14 plaintext plus the largest expansion TLS allows.
const MAX_RECORD: usize = (1 << 14) + 2048;

/// Drives the handshake to completion, reading exactly one TLS record at a time so that
/// nothing after the handshake is consumed from the socket.
pub fn handshake<C, D>(mut conn: C, sock: &mut TcpStream) -> anyhow::Result<C>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<D>>,
    D: rustls::SideData,
{
    loop {
        while conn.wants_write() {
            conn.write_tls(sock).context("write handshake records")?;
        }
        if !conn.is_handshaking() {
            return Ok(conn);
        }
        let record = read_record(sock)?;
        let mut slice = &record[..];
        while !slice.is_empty() {
            conn.read_tls(&mut slice).context("feed rustls")?;
        }
        conn.process_new_packets()
            .map_err(|e| anyhow!("handshake failed: {e}"))?;
    }
}

/// Reads one whole TLS record (5-byte header, then its length).
fn read_record(sock: &mut TcpStream) -> anyhow::Result<Vec<u8>> {
    let mut record = vec![0u8; 5];
    sock.read_exact(&mut record)
        .context("read TLS record header")?;
    let len = usize::from(u16::from_be_bytes([record[3], record[4]]));
    if len > MAX_RECORD {
        bail!("TLS record of {len} bytes exceeds the protocol maximum");
    }
    record.resize(5 + len, 0);
    sock.read_exact(&mut record[5..])
        .context("read TLS record body")?;
    Ok(record)
}

/// The kernel's `struct tls12_crypto_info_*` for one direction, as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoInfo(Vec<u8>);

impl CryptoInfo {
    /// Builds the crypto info for `cipher` from the AEAD key, the 12-byte IV rustls
    /// extracted, and the next record sequence number. For AES-GCM the kernel wants the
    /// IV split into a 4-byte salt and an 8-byte IV; ChaCha20-Poly1305 takes all 12 bytes.
    pub fn new(
        version: TlsVersion,
        cipher: Cipher,
        key: &[u8],
        iv: &[u8],
        seq: u64,
    ) -> anyhow::Result<Self> {
        let info = |cipher_type: u16| libc::tls_crypto_info {
            version: version.kernel(),
            cipher_type,
        };
        let rec_seq = seq.to_be_bytes();
        ensure!(iv.len() == 12, "IV of {} bytes, expected 12", iv.len());
        let bytes = match cipher {
            Cipher::Aes128Gcm => as_bytes(&libc::tls12_crypto_info_aes_gcm_128 {
                info: info(libc::TLS_CIPHER_AES_GCM_128),
                iv: iv[4..].try_into()?,
                key: key
                    .try_into()
                    .with_context(|| format!("AES-128 key of {} bytes", key.len()))?,
                salt: iv[..4].try_into()?,
                rec_seq,
            }),
            Cipher::Aes256Gcm => as_bytes(&libc::tls12_crypto_info_aes_gcm_256 {
                info: info(libc::TLS_CIPHER_AES_GCM_256),
                iv: iv[4..].try_into()?,
                key: key
                    .try_into()
                    .with_context(|| format!("AES-256 key of {} bytes", key.len()))?,
                salt: iv[..4].try_into()?,
                rec_seq,
            }),
            Cipher::Chacha20Poly1305 => as_bytes(&libc::tls12_crypto_info_chacha20_poly1305 {
                info: info(libc::TLS_CIPHER_CHACHA20_POLY1305),
                iv: iv.try_into()?,
                key: key
                    .try_into()
                    .with_context(|| format!("ChaCha20 key of {} bytes", key.len()))?,
                salt: [],
                rec_seq,
            }),
        };
        Ok(CryptoInfo(bytes))
    }

    /// From one direction of rustls's extracted secrets.
    fn from_secrets(
        version: TlsVersion,
        (seq, secrets): &(u64, ConnectionTrafficSecrets),
    ) -> anyhow::Result<Self> {
        match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => {
                Self::new(version, Cipher::Aes128Gcm, key.as_ref(), iv.as_ref(), *seq)
            }
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => {
                Self::new(version, Cipher::Aes256Gcm, key.as_ref(), iv.as_ref(), *seq)
            }
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => Self::new(
                version,
                Cipher::Chacha20Poly1305,
                key.as_ref(),
                iv.as_ref(),
                *seq,
            ),
            _ => bail!("rustls extracted secrets for an AEAD the kernel check does not know"),
        }
    }

    /// The raw bytes, as `setsockopt(SOL_TLS, TLS_TX/TLS_RX)` takes them.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

/// The bytes of a `repr(C)` kernel struct without padding (every `tls12_crypto_info_*`
/// is byte arrays after two `u16`s, so there is none).
fn as_bytes<T: Copy>(value: &T) -> Vec<u8> {
    let size = std::mem::size_of::<T>();
    // SAFETY: `value` is a valid, initialised `T` of `size` bytes; the crypto info structs
    // are `repr(C)` with only `u16` and `u8` array fields, so every byte is initialised.
    let bytes = unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size) };
    bytes.to_vec()
}

fn setsockopt(sock: &TcpStream, level: i32, name: i32, value: &[u8]) -> std::io::Result<()> {
    // SAFETY: the fd is a live socket owned by `sock`; pointer and length describe `value`.
    let ret = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The socket's upper layer protocol (`getsockopt(SOL_TCP, TCP_ULP)`), empty if none.
pub fn tcp_ulp(sock: &TcpStream) -> std::io::Result<String> {
    let mut buf = [0u8; 16];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: the fd is a live socket; the kernel writes at most `len` bytes into `buf` and
    // stores the written length in `len`.
    let ret = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_ULP,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let name = &buf[..(len as usize).min(buf.len())];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Ok(String::from_utf8_lossy(&name[..end]).into_owned())
}

/// Hands the record layer of a connected socket to the kernel: the TLS ULP, then the
/// transmit and receive keys. `ENOENT` on the ULP means the kernel has no kTLS.
fn enable_ktls(
    sock: &TcpStream,
    secrets: ExtractedSecrets,
    version: TlsVersion,
) -> anyhow::Result<()> {
    if let Err(e) = setsockopt(sock, libc::SOL_TCP, libc::TCP_ULP, b"tls") {
        if e.raw_os_error() == Some(libc::ENOENT) {
            return Err(Unavailable(format!(
                "setsockopt(TCP_ULP, \"tls\") = ENOENT: kernel built without CONFIG_TLS \
                 or the tls module is not loaded ({e})"
            ))
            .into());
        }
        return Err(anyhow!(e).context("setsockopt(TCP_ULP, \"tls\")"));
    }
    let ulp = tcp_ulp(sock).context("getsockopt(TCP_ULP)")?;
    ensure!(ulp == "tls", "socket reports ULP {ulp:?} after setting tls");
    let tx = CryptoInfo::from_secrets(version, &secrets.tx)?;
    let rx = CryptoInfo::from_secrets(version, &secrets.rx)?;
    setsockopt(sock, libc::SOL_TLS, libc::TLS_TX, tx.as_slice())
        .context("setsockopt(SOL_TLS, TLS_TX)")?;
    setsockopt(sock, libc::SOL_TLS, libc::TLS_RX, rx.as_slice())
        .context("setsockopt(SOL_TLS, TLS_RX)")?;
    Ok(())
}

/// Parses `/proc/net/tls_stat` (`Name<whitespace>value` lines).
pub fn parse_tls_stat(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let name = parts.next()?;
            let value = parts.next()?.parse().ok()?;
            Some((name.to_owned(), value))
        })
        .collect()
}

/// The kernel's TLS counters for this network namespace, if the file exists (it appears
/// once the tls module is loaded).
pub fn tls_stat() -> Option<BTreeMap<String, u64>> {
    std::fs::read_to_string("/proc/net/tls_stat")
        .ok()
        .map(|t| parse_tls_stat(&t))
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use omnirelay_test_support::{Capability, caps, require_caps};

    use super::*;

    fn assert_case_passes(name: &str) {
        let case = Case::named(name).unwrap();
        match run(&case).unwrap() {
            Outcome::Passed(report) => {
                assert!(
                    report.tx_sw_delta >= 3 && report.rx_sw_delta >= 3,
                    "{report}"
                );
            }
            Outcome::Unavailable(why) => panic!("kTLS probe said yes, but the case says: {why}"),
        }
    }

    #[test]
    fn ktls_tls12_aes_128_gcm() {
        require_caps!(Capability::Ktls);
        assert_case_passes("ktls_tls12_aes_128_gcm");
    }

    #[test]
    fn ktls_tls12_aes_256_gcm() {
        require_caps!(Capability::Ktls);
        assert_case_passes("ktls_tls12_aes_256_gcm");
    }

    #[test]
    fn ktls_tls12_chacha20_poly1305() {
        require_caps!(Capability::Ktls);
        assert_case_passes("ktls_tls12_chacha20_poly1305");
    }

    #[test]
    fn ktls_tls13_aes_128_gcm() {
        require_caps!(Capability::Ktls);
        assert_case_passes("ktls_tls13_aes_128_gcm");
    }

    #[test]
    fn ktls_tls13_aes_256_gcm() {
        require_caps!(Capability::Ktls);
        assert_case_passes("ktls_tls13_aes_256_gcm");
    }

    #[test]
    fn ktls_tls13_chacha20_poly1305() {
        require_caps!(Capability::Ktls);
        assert_case_passes("ktls_tls13_chacha20_poly1305");
    }

    /// Where the kernel has no kTLS, a case must say so with the reason instead of passing
    /// or failing; where it has kTLS, the same call must pass. Runs on every host.
    #[test]
    fn a_case_reports_unavailable_exactly_when_the_kernel_lacks_ktls() {
        let case = CASES[3];
        let probe = caps::probe(Capability::Ktls);
        match run(&case).unwrap() {
            Outcome::Passed(report) => assert!(probe.available, "passed without kTLS: {report}"),
            Outcome::Unavailable(why) => {
                assert!(!probe.available, "kTLS probe said yes, case said: {why}");
                assert!(why.contains("ENOENT"), "{why}");
            }
        }
    }

    /// The userspace half, on any host: the handshake with record-at-a-time reads leaves
    /// the suite and version asked for, and each side's transmit secrets are the other's
    /// receive secrets, with the sequence numbers the kernel must continue from.
    #[test]
    fn extracted_secrets_of_both_ends_mirror_each_other_for_every_case() {
        for case in CASES {
            let pki = Pki::new().unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server_config = pki.server_config(&case).unwrap();
            let server = std::thread::spawn(move || {
                let (mut sock, _) = listener.accept().unwrap();
                let conn = ServerConnection::new(server_config).unwrap();
                let conn = handshake(conn, &mut sock).unwrap();
                check_negotiated(&conn, &case).unwrap();
                conn.dangerous_extract_secrets().unwrap()
            });
            let mut sock = TcpStream::connect(addr).unwrap();
            let conn = ClientConnection::new(
                pki.client_config(&case).unwrap(),
                ServerName::try_from("localhost").unwrap(),
            )
            .unwrap();
            let conn = handshake(conn, &mut sock).unwrap();
            check_negotiated(&conn, &case).unwrap();
            let client = conn.dangerous_extract_secrets().unwrap();
            let server = server.join().unwrap();

            let info = |dir: &(u64, ConnectionTrafficSecrets)| {
                CryptoInfo::from_secrets(case.version, dir).unwrap()
            };
            assert_eq!(info(&client.tx), info(&server.rx), "{}", case.name);
            assert_eq!(info(&client.rx), info(&server.tx), "{}", case.name);
            assert_ne!(info(&client.tx), info(&client.rx), "{}", case.name);
            // TLS 1.3 restarts sequence numbers with the application keys; TLS 1.2 counts
            // the Finished message, encrypted under the same keys.
            let expected_seq = match case.version {
                TlsVersion::Tls13 => 0,
                TlsVersion::Tls12 => 1,
            };
            assert_eq!(client.tx.0, expected_seq, "{}", case.name);
            assert_eq!(server.tx.0, expected_seq, "{}", case.name);
        }
    }

    #[test]
    fn crypto_info_has_the_kernel_layout() {
        let key: Vec<u8> = (0..32).collect();
        let iv: Vec<u8> = (100..112).collect();
        let seq = 0x0102_0304_0506_0708u64;

        let gcm128 =
            CryptoInfo::new(TlsVersion::Tls13, Cipher::Aes128Gcm, &key[..16], &iv, seq).unwrap();
        let b = gcm128.as_slice();
        assert_eq!(b.len(), 4 + 8 + 16 + 4 + 8);
        assert_eq!(
            &b[..4],
            &[0x04, 0x03, 51, 0],
            "version 0x0304, cipher 51, LE"
        );
        assert_eq!(&b[4..12], &iv[4..], "explicit IV: the last 8 bytes");
        assert_eq!(&b[12..28], &key[..16]);
        assert_eq!(&b[28..32], &iv[..4], "salt: the first 4 bytes");
        assert_eq!(&b[32..], &seq.to_be_bytes(), "record sequence, big endian");

        let gcm256 = CryptoInfo::new(TlsVersion::Tls12, Cipher::Aes256Gcm, &key, &iv, 1).unwrap();
        let b = gcm256.as_slice();
        assert_eq!(b.len(), 4 + 8 + 32 + 4 + 8);
        assert_eq!(&b[..4], &[0x03, 0x03, 52, 0]);
        assert_eq!(&b[12..44], &key[..]);
        assert_eq!(&b[48..], &1u64.to_be_bytes());

        let chacha =
            CryptoInfo::new(TlsVersion::Tls13, Cipher::Chacha20Poly1305, &key, &iv, 0).unwrap();
        let b = chacha.as_slice();
        assert_eq!(b.len(), 4 + 12 + 32 + 8);
        assert_eq!(&b[..4], &[0x04, 0x03, 54, 0]);
        assert_eq!(&b[4..16], &iv[..], "ChaCha20 takes the whole 12-byte IV");
        assert_eq!(&b[16..48], &key[..]);

        // A key of the wrong length is an error, not a truncated key.
        assert!(CryptoInfo::new(TlsVersion::Tls13, Cipher::Aes128Gcm, &key, &iv, 0).is_err());
        assert!(CryptoInfo::new(TlsVersion::Tls13, Cipher::Aes256Gcm, &key, &iv[..8], 0).is_err());
    }

    #[test]
    fn tls_stat_parses_counter_lines() {
        let text = "TlsCurrTxSw                     \t1\nTlsCurrRxSw\t2\nTlsTxSw 30\nbogus\n";
        let stat = parse_tls_stat(text);
        assert_eq!(stat.get("TlsCurrTxSw"), Some(&1));
        assert_eq!(stat.get("TlsCurrRxSw"), Some(&2));
        assert_eq!(stat.get("TlsTxSw"), Some(&30));
        assert_eq!(stat.len(), 3);
    }
}
