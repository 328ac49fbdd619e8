//! `berth overlay create|ls|inspect|rm`: a project's overlay networks,
//! through the server's `/networks` with a project token.

use crate::cli::{OverlayArgs, OverlayCommand};
use crate::client::encode;
use crate::cmd::remote::{connect, list, print_json, text, when};
use crate::output::table;
use serde_json::{json, Map, Value};

pub fn run(args: OverlayArgs) -> anyhow::Result<u8> {
    let api = connect(&args.client)?;
    match args.command {
        OverlayCommand::Create {
            name,
            subnet,
            internal,
            json,
        } => {
            let mut body = Map::new();
            body.insert("name".into(), json!(name));
            if let Some(subnet) = subnet {
                body.insert("subnet".into(), json!(subnet));
            }
            body.insert("internal".into(), json!(internal));
            let network = api.post("/networks", &Value::Object(body))?;
            if json {
                print_json(&network);
            } else {
                println!(
                    "overlay {} made: subnet {}, VNI {}{}",
                    text(&network, "name"),
                    text(&network, "subnet"),
                    text(&network, "vni"),
                    if internal { ", internal" } else { "" }
                );
            }
        }
        OverlayCommand::Ls { json } => {
            let answer = api.get("/networks", &[])?;
            if json {
                print_json(&answer);
            } else {
                let rows: Vec<Vec<String>> = list(&answer, "networks")
                    .iter()
                    .map(|n| {
                        vec![
                            text(n, "name"),
                            text(n, "subnet"),
                            text(n, "vni"),
                            text(n, "internal"),
                            when(n, "created_at"),
                        ]
                    })
                    .collect();
                table(&["NAME", "SUBNET", "VNI", "INTERNAL", "CREATED"], &rows);
            }
        }
        OverlayCommand::Inspect { name, json } => {
            let network = api.get(&format!("/networks/{}", encode(&name)), &[])?;
            if json {
                print_json(&network);
            } else {
                println!(
                    "overlay {}: subnet {}, gateway {}, VNI {}, internal {}",
                    text(&network, "name"),
                    text(&network, "subnet"),
                    text(&network, "gateway"),
                    text(&network, "vni"),
                    text(&network, "internal"),
                );
                let rows: Vec<Vec<String>> = list(&network, "tasks")
                    .iter()
                    .map(|t| vec![text(t, "task_id"), text(t, "address"), text(t, "node")])
                    .collect();
                table(&["TASK", "ADDRESS", "NODE"], &rows);
            }
        }
        OverlayCommand::Rm { name, json } => {
            let answer = api.delete(&format!("/networks/{}", encode(&name)))?;
            if json {
                print_json(&answer);
            } else {
                println!("removed overlay {name}");
            }
        }
    }
    Ok(0)
}
