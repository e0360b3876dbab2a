use super::*;

fn addr(i: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], 8000 + i))
}

#[test]
fn compiles_endpoints_in_order_and_is_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ClusterLb>();
    let c = ClusterLb::new(&[(addr(0), 3), (addr(1), 1)], Policy::RoundRobin).unwrap();
    assert_eq!(c.len(), 2);
    assert!(!c.is_empty());
    assert_eq!(c.addr(EndpointId::new(1)), Some(addr(1)));
    assert_eq!(c.weight(EndpointId::new(0)), Some(3));
    assert_eq!(c.weight(EndpointId::new(2)), None);
    assert_eq!(
        c.ids().collect::<Vec<_>>(),
        [EndpointId::new(0), EndpointId::new(1)]
    );
    assert_eq!(c.ring_len(), None);
    assert_eq!(c.policy(), Policy::RoundRobin);
    for policy in [
        Policy::LeastRequest,
        Policy::RingHash { min_ring_size: 8 },
        Policy::Rendezvous,
    ] {
        assert_eq!(
            ClusterLb::new(&[(addr(0), 1)], policy).unwrap().policy(),
            policy
        );
    }
}

#[test]
fn rejects_bad_endpoint_lists() {
    let zero = ClusterLb::new(&[(addr(0), 1), (addr(1), 0)], Policy::RoundRobin);
    assert_eq!(
        zero.unwrap_err(),
        LbError::ZeroWeight {
            index: 1,
            addr: addr(1)
        }
    );
    let dup = ClusterLb::new(
        &[(addr(0), 1), (addr(1), 1), (addr(0), 2)],
        Policy::Rendezvous,
    );
    let err = dup.unwrap_err();
    assert_eq!(
        err,
        LbError::DuplicateEndpoint {
            addr: addr(0),
            first: 0,
            second: 2
        }
    );
    assert!(err.to_string().contains("listed twice"));
    let many = vec![(addr(0), 1); MAX_ENDPOINTS + 1];
    let err = ClusterLb::new(&many, Policy::RoundRobin).unwrap_err();
    assert_eq!(err, LbError::TooManyEndpoints(MAX_ENDPOINTS + 1));
}

#[test]
fn the_default_ring_size_builds_a_ring_at_least_that_big() {
    let policy = Policy::RingHash {
        min_ring_size: DEFAULT_MIN_RING_SIZE,
    };
    let c = ClusterLb::new(&[(addr(0), 1), (addr(1), 1), (addr(2), 1)], policy).unwrap();
    assert_eq!(c.ring_len(), Some(1536)); // 3 * 512: the power-of-two scale above 1024
}

#[test]
fn empty_cluster_is_valid() {
    let c = ClusterLb::new(&[], Policy::RingHash { min_ring_size: 16 }).unwrap();
    assert!(c.is_empty());
    assert_eq!(c.ring_len(), Some(0));
}

#[test]
fn fingerprint_tracks_the_endpoint_list_not_the_policy() {
    let list = [(addr(0), 1), (addr(1), 2)];
    let a = ClusterLb::new(&list, Policy::RoundRobin).unwrap();
    let b = ClusterLb::new(&list, Policy::LeastRequest).unwrap();
    assert_eq!(a.fingerprint(), b.fingerprint());
    let reweighted = ClusterLb::new(&[(addr(0), 1), (addr(1), 3)], Policy::RoundRobin);
    assert_ne!(a.fingerprint(), reweighted.unwrap().fingerprint());
    let reordered = ClusterLb::new(&[(addr(1), 2), (addr(0), 1)], Policy::RoundRobin);
    assert_ne!(a.fingerprint(), reordered.unwrap().fingerprint());
}
