//! The rules of the job graph: every requirement names another job of the workflow, once,
//! and the requirements form no cycle. Both checks are linear in jobs plus requirements
//! and use no recursion, so a chain of [`super::MAX_JOBS`] jobs cannot overflow the stack.

use std::collections::{HashMap, HashSet};

use super::{Condition, JobSpec, Location, Requirement, SpecError};

/// A requirement as the file gives it: by name, with its place.
pub(crate) struct RawRequirement {
    pub name: String,
    pub condition: Condition,
    pub at: Option<Location>,
}

/// Resolves each job's requirements (`raw[i]` for `jobs[i]`) to indices, refusing unknown
/// names, a job requiring itself and an upstream job named twice.
pub(crate) fn resolve(
    jobs: &mut [JobSpec],
    raw: &[Vec<RawRequirement>],
    index: &HashMap<&str, usize>,
) -> Result<(), SpecError> {
    for (i, (job, raw)) in jobs.iter_mut().zip(raw).enumerate() {
        let mut requires: Vec<Requirement> = Vec::with_capacity(raw.len());
        let mut seen = HashSet::with_capacity(raw.len());
        for requirement in raw {
            let Some(&upstream) = index.get(requirement.name.as_str()) else {
                return Err(SpecError::UnknownJob {
                    at: requirement.at,
                    job: job.name.clone(),
                    name: requirement.name.clone(),
                });
            };
            if upstream == i {
                return Err(SpecError::SelfRequirement {
                    at: requirement.at,
                    job: job.name.clone(),
                });
            }
            if !seen.insert(upstream) {
                return Err(SpecError::RepeatedRequirement {
                    at: requirement.at,
                    job: job.name.clone(),
                    name: requirement.name.clone(),
                });
            }
            requires.push(Requirement {
                job: upstream,
                condition: requirement.condition,
            });
        }
        job.requires = requires;
    }
    Ok(())
}

/// Refuses requirements that form a cycle, naming one cycle starting from its smallest
/// name. `raw` gives the places of the requirements, in the same order as `requires`.
pub(crate) fn check_acyclic(
    jobs: &[JobSpec],
    raw: &[Vec<RawRequirement>],
) -> Result<(), SpecError> {
    let Some(mut cycle) = find_cycle(jobs) else {
        return Ok(());
    };
    let smallest = (0..cycle.len())
        .min_by_key(|&i| jobs[cycle[i]].name.as_str())
        .unwrap_or(0);
    cycle.rotate_left(smallest);
    // The second job of the cycle requires the first; point at that requirement.
    let at = match cycle.as_slice() {
        [first, second, ..] => jobs[*second]
            .requires
            .iter()
            .position(|r| r.job == *first)
            .and_then(|k| raw.get(*second)?.get(k)?.at),
        _ => None,
    };
    Err(SpecError::Cycle {
        at,
        cycle: cycle.into_iter().map(|i| jobs[i].name.clone()).collect(),
    })
}

/// One cycle of the requirement graph, as job indices where each requires the one before
/// it and the first requires the last; `None` when there is none. Requirements with an
/// index outside `jobs` are ignored.
pub(crate) fn find_cycle(jobs: &[JobSpec]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut mark = vec![Mark::New; jobs.len()];
    // The depth-first path: a job and how many of its requirements were followed.
    let mut path: Vec<(usize, usize)> = Vec::new();
    for start in 0..jobs.len() {
        if mark[start] != Mark::New {
            continue;
        }
        mark[start] = Mark::OnPath;
        path.push((start, 0));
        while let Some((job, next)) = path.last_mut() {
            let Some(requirement) = jobs[*job].requires.get(*next) else {
                mark[*job] = Mark::Done;
                path.pop();
                continue;
            };
            *next += 1;
            let upstream = requirement.job;
            match mark.get(upstream) {
                Some(Mark::New) => {
                    mark[upstream] = Mark::OnPath;
                    path.push((upstream, 0));
                }
                Some(Mark::OnPath) => {
                    // The path from `upstream` to here: each requires the next, and the last
                    // requires `upstream`. Reversed, each requires the one before it.
                    let from = path.iter().position(|&(j, _)| j == upstream).unwrap_or(0);
                    return Some(path[from..].iter().rev().map(|&(j, _)| j).collect());
                }
                Some(Mark::Done) | None => {}
            }
        }
    }
    None
}
