use super::*;
use crate::lb::test_util::{Always, strategies};

fn addr(i: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], 8000 + i))
}

#[test]
fn compiles_endpoints_in_order_and_is_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ClusterLb>();
    let s = strategies();
    let c = ClusterLb::new(&[(addr(0), 3), (addr(1), 1)], Policy::RoundRobin, &s).unwrap();
    assert_eq!(c.len(), 2);
    assert!(!c.is_empty());
    assert_eq!(c.addr(EndpointId::new(1)), Some(addr(1)));
    assert_eq!(c.weight(EndpointId::new(0)), Some(3));
    assert_eq!(c.weight(EndpointId::new(2)), None);
    assert_eq!(
        c.ids().collect::<Vec<_>>(),
        [EndpointId::new(0), EndpointId::new(1)]
    );
    assert_eq!(c.policy(), Policy::RoundRobin);
    assert!(matches!(c.algorithm(), Algorithm::RoundRobin));
    for policy in [Policy::LeastRequest, Policy::RingHash, Policy::Rendezvous] {
        let c = ClusterLb::new(&[(addr(0), 1)], policy, &s).unwrap();
        assert_eq!(c.policy(), policy);
        let has_table = matches!(c.algorithm(), Algorithm::Table(_));
        assert_eq!(has_table, policy != Policy::LeastRequest, "{policy:?}");
    }
}

#[test]
fn rejects_bad_endpoint_lists() {
    let s = strategies();
    let zero = ClusterLb::new(&[(addr(0), 1), (addr(1), 0)], Policy::RoundRobin, &s);
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
        &s,
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
    let err = ClusterLb::new(&many, Policy::RoundRobin, &s).unwrap_err();
    assert_eq!(err, LbError::TooManyEndpoints(MAX_ENDPOINTS + 1));
}

#[test]
fn hash_policies_build_their_table_with_their_own_strategy() {
    let list = [(addr(0), 1), (addr(1), 1), (addr(2), 1)];
    let mut s = strategies();
    let always = |member| {
        Arc::new(Always {
            member,
            claim: None,
        })
    };
    s.ring_hash = always(1);
    s.rendezvous = always(2);
    for (policy, member) in [(Policy::RingHash, 1), (Policy::Rendezvous, 2)] {
        let c = ClusterLb::new(&list, policy, &s).unwrap();
        let Algorithm::Table(table) = c.algorithm() else {
            panic!("{policy:?} has no table");
        };
        assert_eq!(table.members(), 3);
        assert_eq!(table.lookup(42, &|_| false), Some(member), "{policy:?}");
    }
}

#[test]
fn a_table_of_the_wrong_size_is_refused() {
    let mut s = strategies();
    let claim = Some(1);
    s.ring_hash = Arc::new(Always { member: 0, claim });
    let err = ClusterLb::new(&[(addr(0), 1), (addr(1), 1)], Policy::RingHash, &s).unwrap_err();
    assert_eq!(
        err,
        LbError::TableSize {
            strategy: "always",
            built: 1,
            endpoints: 2
        }
    );
    assert!(
        err.to_string().contains("1 members for 2 endpoints"),
        "{err}"
    );
    assert!(ClusterLb::new(&[(addr(0), 1)], Policy::RingHash, &s).is_ok());
}

#[test]
fn empty_cluster_is_valid() {
    let c = ClusterLb::new(&[], Policy::RingHash, &strategies()).unwrap();
    assert!(c.is_empty());
}

#[test]
fn fingerprint_tracks_the_endpoint_list_not_the_policy() {
    let list = [(addr(0), 1), (addr(1), 2)];
    let s = strategies();
    let a = ClusterLb::new(&list, Policy::RoundRobin, &s).unwrap();
    let b = ClusterLb::new(&list, Policy::RingHash, &s).unwrap();
    assert_eq!(a.fingerprint(), b.fingerprint());
    let reweighted = ClusterLb::new(&[(addr(0), 1), (addr(1), 3)], Policy::RoundRobin, &s);
    assert_ne!(a.fingerprint(), reweighted.unwrap().fingerprint());
    let reordered = ClusterLb::new(&[(addr(1), 2), (addr(0), 1)], Policy::RoundRobin, &s);
    assert_ne!(a.fingerprint(), reordered.unwrap().fingerprint());
}
