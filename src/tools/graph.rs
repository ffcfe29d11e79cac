//! `kfp-operator graph`: the RunConfiguration dependency graph of a cluster, listed through the
//! API and rendered by [`crate::triggers::render`].

use crate::api::NamespacedName;
use crate::triggers::{DependencyGraph, qualified_name, render, trigger_dependencies};

/// Renders the dependency graph as `mermaid`, `dot` or `text`, each node with its latest
/// successful run or its failure: every RunConfiguration, or (with `namespace`) those of one
/// namespace with their neighbours in other namespaces. Without permission to list every
/// namespace, a namespace's graph shows the dependencies it names, but not its dependants
/// elsewhere.
pub async fn graph_of_cluster(
    client: &kube::Client,
    namespace: Option<&str>,
    format: &str,
) -> Result<String, kube::Error> {
    use kube::api::{Api, ListParams};

    use crate::api::RunConfiguration;
    use crate::api::conditions::SyncState;

    let all: Api<RunConfiguration> = Api::all(client.clone());
    let rcs = match (all.list(&ListParams::default()).await, namespace) {
        (Ok(list), _) => list.items,
        (Err(kube::Error::Api(status)), Some(namespace)) if status.code == 403 => {
            let mut rcs = Api::<RunConfiguration>::namespaced(client.clone(), namespace)
                .list(&ListParams::default())
                .await?
                .items;
            let elsewhere: std::collections::BTreeSet<NamespacedName> = rcs
                .iter()
                .flat_map(trigger_dependencies)
                .filter(|dependency| dependency.namespace != namespace)
                .collect();
            for dependency in elsewhere {
                let api: Api<RunConfiguration> = Api::namespaced(client.clone(), &dependency.namespace);
                if let Ok(Some(rc)) = api.get_opt(&dependency.name).await {
                    rcs.push(rc);
                }
            }
            rcs
        }
        (Err(error), _) => return Err(error),
    };
    let graph = DependencyGraph::from_run_configurations(rcs.iter());
    let states = rcs
        .iter()
        .map(|rc| {
            let status = rc.status.clone().unwrap_or_default();
            let state = match (&status.latest_runs.succeeded, SyncState::of_conditions(&status.conditions)) {
                (_, Some(SyncState::Failed)) => "Failed".to_owned(),
                (Some(latest), _) => format!("Succeeded {}", latest.provider_id),
                (None, _) => "-".to_owned(),
            };
            (qualified_name(rc), state)
        })
        .collect();
    let annotations = render::Annotations::of(rcs.iter());
    let view = match namespace {
        Some(namespace) => render::View::namespace(&graph, &states, namespace),
        None => render::View::all(&graph, &states),
    }
    .annotated(&annotations);
    Ok(match format {
        "dot" => render::dot(&view),
        "text" => render::text(&view),
        _ => render::mermaid(&view),
    })
}
