//! Listener ids that stay with their listener. An id is a budgeted listener's counter slot
//! and part of its buckets' key; [`plan`](super::plan()) numbers listeners by their place in
//! the budget list, so without this a reordered or shortened list would move one
//! listener's counts and token buckets to another. [`ListenerIds::assign`] renumbers a
//! plan: a listener keeps the id it had, a new one takes an id never held, then one held
//! longest ago by a removed listener (whose counters are then zeroed; its buckets cannot
//! be told apart from others', and refill by themselves).

use std::fmt;

use omnirelay_ebpf_common::limiter::{MAX_LISTENERS, NOT_BUDGETED};

use super::KernelPlan;

/// Who holds (or last held) an id.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Holder {
    /// A listener, by name.
    Name(String),
    /// A listener known only by its address and port: read back from the maps of a
    /// running limiter at start, resolved to a name by the first plan applied (or given up).
    Address([u8; 16], u16),
    /// A listener gone before this daemon started (its id has counts in the pinned maps).
    Gone,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Slot {
    holder: Holder,
    /// Held by the plan in force.
    live: bool,
    /// When it was last given up (an apply count), for reusing the oldest first.
    freed_at: u64,
}

/// The id of every budgeted listener, across plans.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerIds {
    /// Per id; `None`: never held.
    slots: Vec<Option<Slot>>,
    /// Plans assigned so far.
    applies: u64,
}

/// A plan with more budgeted listeners than there are ids.
#[derive(Debug)]
pub struct TooManyListeners(pub usize);

impl fmt::Display for TooManyListeners {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} budgeted listeners; the kernel maps hold {MAX_LISTENERS}",
            self.0
        )
    }
}

/// A plan renumbered by [`ListenerIds::assign`].
#[derive(Debug)]
pub struct Assigned {
    /// The plan with stable ids.
    pub plan: KernelPlan,
    /// Ids given to a listener that did not hold them: their counters start from zero.
    pub fresh: Vec<u32>,
    /// The ids to keep once this plan is in force.
    pub next: ListenerIds,
}

impl ListenerIds {
    /// Ids read back from the maps a running limiter left: `in_force`, (id, address, port)
    /// of each budgeted listener of the generation in force, and `counted`, every id whose
    /// counters are not zero (held once, so not handed out as never held).
    pub fn recovered(
        in_force: impl IntoIterator<Item = (u32, [u8; 16], u16)>,
        counted: impl IntoIterator<Item = u32>,
    ) -> Self {
        let mut ids = ListenerIds::default();
        let mut put = |id: u32, slot: Slot| {
            if id < MAX_LISTENERS {
                let i = id as usize;
                if ids.slots.len() <= i {
                    ids.slots.resize(i + 1, None);
                }
                ids.slots[i] = Some(slot);
            }
        };
        for id in counted {
            let gone = Slot {
                holder: Holder::Gone,
                live: false,
                freed_at: 0,
            };
            put(id, gone);
        }
        for (id, addr, port) in in_force {
            let held = Slot {
                holder: Holder::Address(addr, port),
                live: true,
                freed_at: 0,
            };
            put(id, held);
        }
        ids
    }

    /// Listener names by id of the plan in force; empty where no listener holds the id.
    pub fn names(&self) -> Vec<String> {
        self.slots
            .iter()
            .map(|s| match s {
                Some(Slot {
                    holder: Holder::Name(n),
                    live: true,
                    ..
                }) => n.clone(),
                _ => String::new(),
            })
            .collect()
    }

    /// `plan` renumbered so that each listener keeps its id; see the module docs.
    pub fn assign(&self, plan: &KernelPlan) -> Result<Assigned, TooManyListeners> {
        if plan.names.len() > MAX_LISTENERS as usize {
            return Err(TooManyListeners(plan.names.len()));
        }
        // The plan's own numbering: its id i is `plan.names[i]`, at this address.
        let mut address = vec![None; plan.names.len()];
        for (addr, port, policy) in &plan.listeners {
            if policy.flags & NOT_BUDGETED == 0
                && let Some(a) = address.get_mut(policy.id as usize)
            {
                *a = Some((*addr, *port));
            }
        }
        let mut next = self.clone();
        next.applies += 1;
        let mut map: Vec<Option<u32>> = vec![None; plan.names.len()];
        let mut taken = vec![false; MAX_LISTENERS as usize];
        // Kept: by name, then by the address a recovered id was read back with.
        for (i, name) in plan.names.iter().enumerate() {
            let by_name = |h: &Holder| matches!(h, Holder::Name(n) if n == name);
            let by_address =
                |h: &Holder| matches!(h, Holder::Address(a, p) if Some((*a, *p)) == address[i]);
            let found = self.position(by_name).or_else(|| self.position(by_address));
            if let Some(id) = found.filter(|id| !taken[*id]) {
                taken[id] = true;
                map[i] = Some(id as u32);
            }
        }
        // New: an id never held, else the one given up longest ago, else (a plan that
        // replaces every listener at once) one the plan in force still holds.
        let mut fresh = Vec::new();
        for slot in &mut map {
            if slot.is_some() {
                continue;
            }
            let never = (0..MAX_LISTENERS as usize)
                .find(|&id| !taken[id] && self.slots.get(id).is_none_or(Option::is_none));
            let oldest = || {
                (0..self.slots.len())
                    .filter(|&id| !taken[id])
                    .filter_map(|id| self.slots[id].as_ref().map(|s| (s.live, s.freed_at, id)))
                    .min()
                    .map(|(_, _, id)| id)
            };
            if let Some(id) = never.or_else(oldest) {
                taken[id] = true;
                *slot = Some(id as u32);
                fresh.push(id as u32);
            }
        }
        // Every id the plan in force held and this one does not is given up now; one read
        // back by address that this plan did not claim is given up for good (a listener
        // added at that address later is a new one).
        for (id, slot) in next.slots.iter_mut().enumerate() {
            if let Some(s) = slot
                && !taken[id]
            {
                if s.live {
                    s.live = false;
                    s.freed_at = next.applies;
                }
                if matches!(s.holder, Holder::Address(..)) {
                    s.holder = Holder::Gone;
                }
            }
        }
        for (i, id) in map.iter().enumerate() {
            // Every name got an id: at most MAX_LISTENERS of them, checked above.
            let Some(id) = id.map(|id| id as usize) else {
                continue;
            };
            if next.slots.len() <= id {
                next.slots.resize(id + 1, None);
            }
            next.slots[id] = Some(Slot {
                holder: Holder::Name(plan.names[i].clone()),
                live: true,
                freed_at: 0,
            });
        }
        let renumber = |id: u32| map.get(id as usize).copied().flatten().unwrap_or(id);
        let mut plan = plan.clone();
        for (_, _, policy) in &mut plan.listeners {
            if policy.flags & NOT_BUDGETED == 0 {
                policy.id = renumber(policy.id);
            }
        }
        for (id, ..) in &mut plan.overrides {
            *id = renumber(*id);
        }
        plan.names = next.names();
        fresh.sort_unstable();
        Ok(Assigned { plan, fresh, next })
    }

    fn position(&self, mut f: impl FnMut(&Holder) -> bool) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| f(&s.holder)))
    }
}

#[cfg(test)]
mod tests {
    use omnirelay_ebpf_common::limiter::{Budget, ListenerPolicy};

    use super::*;

    /// A plan budgeting `names` in this order, listener i at 10.0.0.i:80.
    fn plan_of(names: &[&str]) -> KernelPlan {
        let listeners = names
            .iter()
            .enumerate()
            .map(|(i, _)| {
                let policy = ListenerPolicy {
                    id: i as u32,
                    budget: Budget::new(1, 1),
                    ..ListenerPolicy::default()
                };
                (addr(i), 80, policy)
            })
            .collect();
        KernelPlan {
            version: 1,
            listeners,
            names: names.iter().map(|n| n.to_string()).collect(),
            allow: vec![],
            deny: vec![],
            overrides: (0..names.len() as u32)
                .map(|id| (id, addr(id as usize), 128, Budget::new(2, 2)))
                .collect(),
            weights: Default::default(),
            drop_malformed: false,
        }
    }

    fn addr(i: usize) -> [u8; 16] {
        omnirelay_ebpf_common::limiter::v4_mapped([10, 0, 0, i as u8])
    }

    /// The id each listener got, checked against its policy and overrides.
    fn ids_of(a: &Assigned) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for (i, (addr, _, policy)) in a.plan.listeners.iter().enumerate() {
            let name = &a.plan.names[policy.id as usize];
            // Each override followed its listener (it was made for the listener's address).
            assert!(
                a.plan
                    .overrides
                    .contains(&(policy.id, *addr, 128, Budget::new(2, 2))),
                "listener {i}'s override kept its id"
            );
            out.push((name.clone(), policy.id));
        }
        out
    }

    fn step(ids: &mut ListenerIds, names: &[&str]) -> Assigned {
        let a = ids.assign(&plan_of(names)).unwrap();
        *ids = a.next.clone();
        a
    }

    #[test]
    fn a_listener_keeps_its_id_when_the_budget_list_is_reordered_or_shortened() {
        let mut ids = ListenerIds::default();
        let a = step(&mut ids, &["a", "b", "c"]);
        assert_eq!(
            ids_of(&a),
            [("a".into(), 0), ("b".into(), 1), ("c".into(), 2)]
        );
        assert_eq!(a.fresh, [0, 1, 2]);

        let a = step(&mut ids, &["c", "a"]);
        assert_eq!(ids_of(&a), [("c".into(), 2), ("a".into(), 0)]);
        assert!(a.fresh.is_empty(), "nobody changed ids");
        assert_eq!(a.plan.names, ["a", "", "c"], "b's id is unlabelled");

        // A new listener takes an id never held, not b's.
        let a = step(&mut ids, &["c", "a", "d"]);
        assert_eq!(ids_of(&a)[2], ("d".into(), 3));
        assert_eq!(a.fresh, [3]);

        // b comes back: its old id, counters and buckets.
        let a = step(&mut ids, &["b", "c", "a", "d"]);
        assert_eq!(ids_of(&a)[0], ("b".into(), 1));
        assert!(a.fresh.is_empty());
    }

    #[test]
    fn when_every_id_was_held_the_one_given_up_longest_ago_is_reused_and_zeroed() {
        let mut ids = ListenerIds::default();
        let all: Vec<String> = (0..MAX_LISTENERS).map(|i| format!("l{i}")).collect();
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        step(&mut ids, &all);
        // l5 goes first, then l9: a newcomer takes l5's id.
        let without = |gone: &[&str]| -> Vec<&str> {
            all.iter().copied().filter(|n| !gone.contains(n)).collect()
        };
        step(&mut ids, &without(&["l5"]));
        step(&mut ids, &without(&["l5", "l9"]));
        let mut with_new = without(&["l5", "l9"]);
        with_new.push("new");
        let a = step(&mut ids, &with_new);
        assert_eq!(ids_of(&a).last(), Some(&("new".into(), 5)));
        assert_eq!(a.fresh, [5], "its counters are zeroed");

        // A plan that replaces every listener at once still gets an id for each.
        let others: Vec<String> = (0..MAX_LISTENERS).map(|i| format!("x{i}")).collect();
        let others: Vec<&str> = others.iter().map(String::as_str).collect();
        let a = step(&mut ids, &others);
        let mut got: Vec<u32> = ids_of(&a).iter().map(|(_, id)| *id).collect();
        got.sort_unstable();
        assert_eq!(got, (0..MAX_LISTENERS).collect::<Vec<_>>());
        assert_eq!(a.fresh.len(), MAX_LISTENERS as usize);
    }

    #[test]
    fn ids_read_back_from_a_running_limiter_are_matched_by_address_once() {
        // The previous daemon had a at id 4 and b at id 7 in force, and had given ids 0
        // and 9 to listeners gone since (their counts are in the maps).
        let ids = ListenerIds::recovered(
            [(4, addr(0), 80), (7, addr(1), 80), (9, addr(9), 80)],
            [0, 4, 9],
        );
        // The first plan has a and b (by address) and c, not the one at id 9.
        let mut ids = {
            let a = ids.assign(&plan_of(&["a", "b", "c"])).unwrap();
            assert_eq!(
                ids_of(&a),
                [("a".into(), 4), ("b".into(), 7), ("c".into(), 1)],
                "c takes an id never held, not 0"
            );
            assert_eq!(a.fresh, [1]);
            a.next
        };
        // Id 9's address is no claim any more: a listener there later is a new one.
        let later = step(
            &mut ids,
            &["a", "b", "c", "x", "y", "z", "w", "v", "u", "t"],
        );
        let got: Vec<u32> = ids_of(&later).iter().map(|(_, id)| *id).collect();
        assert_eq!(
            got,
            [4, 7, 1, 2, 3, 5, 6, 8, 10, 11],
            "ids 0 and 9 come last"
        );
    }

    #[test]
    fn a_plan_with_more_listeners_than_ids_is_refused() {
        let names: Vec<String> = (0..=MAX_LISTENERS).map(|i| format!("l{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert!(ListenerIds::default().assign(&plan_of(&names)).is_err());
    }
}
