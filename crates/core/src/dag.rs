//! Validation of a job's task graph: unique names, known dependencies, no cycles.
//!
//! The operator validates a `Job` with this before creating anything, and the catalog checks
//! again before storing, so a malformed graph is reported the same way everywhere.

use std::collections::{HashMap, VecDeque};

/// Why a task graph is not a valid DAG.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    /// A job must have at least one task.
    #[error("the job has no tasks")]
    Empty,
    /// Two tasks share a name.
    #[error("task name {0:?} is used more than once")]
    DuplicateName(String),
    /// A task depends on a name that is not a task of the job.
    #[error("task {task:?} depends on {dependency:?}, which is not a task of this job")]
    UnknownDependency {
        /// The depending task.
        task: String,
        /// The missing name.
        dependency: String,
    },
    /// A task depends on itself.
    #[error("task {0:?} depends on itself")]
    SelfDependency(String),
    /// The dependencies form a cycle.
    #[error("tasks {0:?} form a dependency cycle")]
    Cycle(Vec<String>),
}

impl DagError {
    /// A stable code for conditions, events and API errors.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::Empty => "dag_empty",
            Self::DuplicateName(_) => "dag_duplicate_task",
            Self::UnknownDependency { .. } => "dag_unknown_dependency",
            Self::SelfDependency(_) => "dag_self_dependency",
            Self::Cycle(_) => "dag_cycle",
        }
    }
}

/// Checks a graph given as `(name, dependencies)` pairs and returns the task names in a
/// topological order (dependencies first; ties keep the input order).
pub fn topological_order<'a, I, D>(tasks: I) -> Result<Vec<&'a str>, DagError>
where
    I: IntoIterator<Item = (&'a str, D)>,
    D: IntoIterator<Item = &'a str>,
{
    let tasks: Vec<(&str, Vec<&str>)> =
        tasks.into_iter().map(|(name, deps)| (name, deps.into_iter().collect())).collect();
    if tasks.is_empty() {
        return Err(DagError::Empty);
    }
    let mut index = HashMap::with_capacity(tasks.len());
    for (position, (name, _)) in tasks.iter().enumerate() {
        if index.insert(*name, position).is_some() {
            return Err(DagError::DuplicateName((*name).to_owned()));
        }
    }
    let mut indegree = vec![0usize; tasks.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); tasks.len()];
    for (position, (name, deps)) in tasks.iter().enumerate() {
        for dep in deps {
            if dep == name {
                return Err(DagError::SelfDependency((*name).to_owned()));
            }
            let Some(&dep_position) = index.get(dep) else {
                return Err(DagError::UnknownDependency { task: (*name).to_owned(), dependency: (*dep).to_owned() });
            };
            indegree[position] += 1;
            dependents[dep_position].push(position);
        }
    }
    let mut ready: VecDeque<usize> = (0..tasks.len()).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(tasks.len());
    while let Some(next) = ready.pop_front() {
        order.push(tasks[next].0);
        for &dependent in &dependents[next] {
            indegree[dependent] -= 1;
            if indegree[dependent] == 0 {
                ready.push_back(dependent);
            }
        }
    }
    if order.len() < tasks.len() {
        let cycle = (0..tasks.len()).filter(|&i| indegree[i] > 0).map(|i| tasks[i].0.to_owned()).collect();
        return Err(DagError::Cycle(cycle));
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(graph: &[(&'static str, &[&'static str])]) -> Result<Vec<&'static str>, DagError> {
        topological_order(graph.iter().map(|(name, deps)| (*name, deps.iter().copied())))
    }

    #[test]
    fn valid_graphs_come_out_dependencies_first() {
        assert_eq!(check(&[("a", &[])]), Ok(vec!["a"]));
        assert_eq!(check(&[("agg", &["clean"]), ("clean", &["gen"]), ("gen", &[])]), Ok(vec!["gen", "clean", "agg"]));
        // fan-out then fan-in
        assert_eq!(
            check(&[("gen", &[]), ("l", &["gen"]), ("r", &["gen"]), ("join", &["l", "r"])]),
            Ok(vec!["gen", "l", "r", "join"])
        );
    }

    #[test]
    fn invalid_graph_table() {
        let cases: &[(&[(&str, &[&str])], DagError)] = &[
            (&[], DagError::Empty),
            (&[("a", &[]), ("a", &[])], DagError::DuplicateName("a".into())),
            (&[("a", &["ghost"])], DagError::UnknownDependency { task: "a".into(), dependency: "ghost".into() }),
            (&[("a", &["a"])], DagError::SelfDependency("a".into())),
            (
                &[("a", &["c"]), ("b", &["a"]), ("c", &["b"]), ("d", &[])],
                DagError::Cycle(vec!["a".into(), "b".into(), "c".into()]),
            ),
        ];
        for (graph, expected) in cases {
            let got = topological_order(graph.iter().map(|(n, d)| (*n, d.iter().copied())));
            assert_eq!(got.as_ref(), Err(expected), "graph {graph:?}");
            assert!(!expected.error_code().is_empty());
        }
    }
}
