//! Who waits for whom: the dependency graph of a set of apps (`depends_on`, `role`), with the
//! edges the roles add, cycles and closures. Pure: names and roles in, indices out.
//!
//! Edges a role adds (each only where it makes no cycle with what the file says):
//! - every app and init job waits for every sidecar to be ready (sidecars start first);
//! - every app (`role: app`) waits for every init job that no app names in its `depends_on`
//!   to complete (an init job named by some apps gates only those).
//!
//! The coordinator reads the same graph for the start order and the reverse stop order
//! (`supervisor::order`).

use super::model::{App, Condition, Dependency, Role};

/// One app as the graph sees it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub name: &'a str,
    pub role: Role,
    pub depends_on: &'a [Dependency],
}

impl<'a> From<&'a App> for Entry<'a> {
    fn from(a: &'a App) -> Self {
        Entry { name: &a.name, role: a.role, depends_on: &a.depends_on }
    }
}

/// `from` needs app `to` to have reached `condition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub to: usize,
    pub condition: Condition,
    /// Added by a role, not written in the file.
    pub implicit: bool,
}

/// `needs[a]`: what app `a` waits for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Graph {
    pub needs: Vec<Vec<Edge>>,
}

/// What is wrong with the `depends_on` of a set of apps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// `depends_on[entry]` of app `app` names no app.
    Unknown { app: usize, entry: usize },
    /// An app depends on itself.
    Itself { app: usize, entry: usize },
    /// The apps of a cycle, in order (the last one waits for the first).
    Cycle(Vec<usize>),
}

impl Graph {
    /// True when no app waits for another (no `depends_on`, no roles): everything starts at once.
    pub fn is_flat(&self) -> bool {
        self.needs.iter().all(Vec::is_empty)
    }

    /// The edge from `a` to `b`, if `a` waits for `b`.
    pub fn edge(&self, a: usize, b: usize) -> Option<&Edge> {
        self.needs.get(a)?.iter().find(|e| e.to == b)
    }

    /// The apps that `roots` need, directly or not, with the roots themselves.
    pub fn closure(&self, roots: &[usize]) -> Vec<bool> {
        let mut seen = vec![false; self.needs.len()];
        let mut stack: Vec<usize> = roots.iter().copied().filter(|&r| r < seen.len()).collect();
        while let Some(a) = stack.pop() {
            if std::mem::replace(&mut seen[a], true) {
                continue;
            }
            stack.extend(self.needs[a].iter().map(|e| e.to));
        }
        seen
    }
}

/// The graph of `entries` (file order), and what is wrong with it. With problems, the graph
/// holds the edges that could be made.
pub fn graph(entries: &[Entry]) -> (Graph, Vec<Problem>) {
    let n = entries.len();
    let mut problems = Vec::new();
    let mut g = Graph { needs: vec![Vec::new(); n] };
    let mut named = vec![false; n];
    for (a, e) in entries.iter().enumerate() {
        for (k, d) in e.depends_on.iter().enumerate() {
            let targets: Vec<usize> = (0..n).filter(|&b| entries[b].name == d.name).collect();
            if targets.is_empty() {
                problems.push(Problem::Unknown { app: a, entry: k });
            }
            for b in targets {
                if b == a {
                    problems.push(Problem::Itself { app: a, entry: k });
                    continue;
                }
                named[b] = true;
                if g.edge(a, b).is_none() {
                    g.needs[a].push(Edge {
                        to: b,
                        condition: d.condition.unwrap_or(Condition::default_for(entries[b].role)),
                        implicit: false,
                    });
                }
            }
        }
    }
    // What each app needs through the file's own edges: a role's edge must not close a cycle.
    let explicit: Vec<Vec<bool>> = (0..n).map(|a| g.closure(&[a])).collect();
    for a in 0..n {
        for b in 0..n {
            if a == b || g.edge(a, b).is_some() || explicit[b][a] {
                continue;
            }
            let condition = match (entries[a].role, entries[b].role) {
                (Role::App | Role::Init, Role::Sidecar) => Condition::Ready,
                (Role::App, Role::Init) if !named[b] => Condition::Completed,
                _ => continue,
            };
            g.needs[a].push(Edge { to: b, condition, implicit: true });
        }
    }
    if let Some(c) = find_cycle(&g) {
        problems.push(Problem::Cycle(c));
    }
    (g, problems)
}

/// The graph of running apps (their `depends_on` already names apps as they run); a problem
/// (an app added later naming nobody) leaves that edge out.
pub fn of_apps<'a>(apps: impl IntoIterator<Item = &'a App>) -> Graph {
    let entries: Vec<Entry> = apps.into_iter().map(Entry::from).collect();
    let (mut g, problems) = graph(&entries);
    if problems.iter().any(|p| matches!(p, Problem::Cycle(_))) {
        // Never at start (the config is refused); an app added later: no order rather than a deadlock.
        g = Graph { needs: vec![Vec::new(); entries.len()] };
    }
    g
}

/// One cycle of `g`, if there is one (iterative depth-first search).
fn find_cycle(g: &Graph) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let n = g.needs.len();
    let mut mark = vec![Mark::New; n];
    for root in 0..n {
        if mark[root] != Mark::New {
            continue;
        }
        // (node, next edge to look at); the stack is the current path.
        let mut stack = vec![(root, 0usize)];
        mark[root] = Mark::Open;
        while let Some(&mut (a, ref mut i)) = stack.last_mut() {
            if let Some(e) = g.needs[a].get(*i) {
                *i += 1;
                match mark[e.to] {
                    Mark::New => {
                        mark[e.to] = Mark::Open;
                        stack.push((e.to, 0));
                    }
                    Mark::Open => {
                        let start = stack.iter().position(|(x, _)| *x == e.to).unwrap_or(0);
                        return Some(stack[start..].iter().map(|(x, _)| *x).collect());
                    }
                    Mark::Done => {}
                }
            } else {
                mark[a] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(name: &str, c: Option<Condition>) -> Dependency {
        Dependency { name: name.into(), condition: c }
    }

    fn build(apps: &[(&str, Role, Vec<Dependency>)]) -> (Graph, Vec<Problem>) {
        let entries: Vec<Entry> = apps.iter().map(|(n, r, d)| Entry { name: n, role: *r, depends_on: d }).collect();
        graph(&entries)
    }

    fn needs(g: &Graph, a: usize) -> Vec<(usize, Condition, bool)> {
        let mut v: Vec<_> = g.needs[a].iter().map(|e| (e.to, e.condition, e.implicit)).collect();
        v.sort_by_key(|x| x.0);
        v
    }

    #[test]
    fn roles_add_edges_and_explicit_conditions_win() {
        use Condition::*;
        let (g, p) = build(&[
            ("migrate", Role::Init, vec![]),
            ("proxy", Role::Sidecar, vec![]),
            ("web", Role::App, vec![dep("worker", Some(Started))]),
            ("worker", Role::App, vec![]),
            ("seed", Role::Init, vec![dep("migrate", None)]),
        ]);
        assert!(p.is_empty(), "{p:?}");
        // Inits wait for sidecars. `seed` names migrate: it waits with the default condition
        // for an init (completed), and migrate, being named, gates only seed; seed, named by
        // nobody, gates every app.
        assert_eq!(needs(&g, 0), [(1, Ready, true)]);
        assert_eq!(needs(&g, 1), []);
        assert_eq!(needs(&g, 2), [(1, Ready, true), (3, Started, false), (4, Completed, true)]);
        assert_eq!(needs(&g, 3), [(1, Ready, true), (4, Completed, true)]);
        assert_eq!(needs(&g, 4), [(0, Completed, false), (1, Ready, true)]);
        assert!(!g.is_flat());
        assert!(build(&[("a", Role::App, vec![]), ("b", Role::App, vec![])]).0.is_flat());
    }

    #[test]
    fn an_init_named_by_an_app_gates_only_that_app() {
        let (g, _) = build(&[("migrate", Role::Init, vec![]), ("web", Role::App, vec![dep("migrate", None)]), ("cron", Role::App, vec![])]);
        assert_eq!(needs(&g, 1), [(0, Condition::Completed, false)]);
        assert_eq!(needs(&g, 2), []);
    }

    #[test]
    fn a_role_edge_never_makes_a_cycle_with_the_files_edges() {
        // The sidecar says it needs `web`: web does not wait for it then.
        let (g, p) = build(&[("proxy", Role::Sidecar, vec![dep("web", None)]), ("web", Role::App, vec![])]);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(needs(&g, 1), []);
    }

    #[test]
    fn unknown_names_self_and_cycles_are_problems() {
        let (_, p) = build(&[("a", Role::App, vec![dep("b", None), dep("nope", None), dep("a", None)]), ("b", Role::App, vec![])]);
        assert_eq!(p, [Problem::Unknown { app: 0, entry: 1 }, Problem::Itself { app: 0, entry: 2 }]);
        let (_, p) = build(&[
            ("a", Role::App, vec![dep("c", None)]),
            ("b", Role::App, vec![dep("a", None)]),
            ("c", Role::App, vec![dep("b", None)]),
        ]);
        assert_eq!(p, [Problem::Cycle(vec![0, 2, 1])]);
    }

    #[test]
    fn closure_brings_in_what_the_roots_need() {
        let (g, _) = build(&[
            ("migrate", Role::Init, vec![]),
            ("web", Role::App, vec![dep("api", None)]),
            ("api", Role::App, vec![]),
            ("other", Role::App, vec![]),
        ]);
        assert_eq!(g.closure(&[1]), [true, true, true, false]);
    }
}
