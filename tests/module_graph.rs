//! The library's modules form a DAG: no module reaches, through `crate::` paths, a module that
//! reaches it back. A node is a top-level module (`src/kafka.rs` or everything under
//! `src/kafka/` is `kafka`); an edge is any `crate::` path in its non-test code (unit tests
//! may use the assembled configuration). docs/modules.md shows the graph; regenerate it with
//! `MODULE_GRAPH_UPDATE=1 cargo test --test module_graph`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/modules.md");
const BEGIN: &str = "```mermaid\n";
const END: &str = "```\n";

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The code of a file without its comments and its `#[cfg(test)] mod tests`.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first segment of every path after `crate::`, braces included
/// (`crate::{a::B, c}` names `a` and `c`).
fn crate_paths(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        names.insert(ident(group[start..i].trim()));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.insert(ident(group[start..i].trim()));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            names.insert(ident(rest));
        }
    }
    names.retain(|name| !name.is_empty());
    names
}

/// Top-level module → the top-level modules its code names.
fn module_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let module_of = |path: &Path| -> Option<String> {
        let relative = path.strip_prefix(&src).ok()?;
        let first = relative.components().next()?.as_os_str().to_str()?;
        match first {
            "lib.rs" | "main.rs" | "bin" => None,
            file => Some(file.trim_end_matches(".rs").to_owned()),
        }
    };
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
    // `crate::App` and the like: the root's re-exports, by the module they come from.
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let reexports: BTreeMap<String, String> = lib
        .lines()
        .filter_map(|line| line.trim().strip_prefix("pub use ")?.strip_suffix(';'))
        .filter_map(|path| {
            let (module, name) = path.split_once("::")?;
            let name = name.rsplit("::").next()?;
            Some((name.to_owned(), module.to_owned()))
        })
        .collect();
    let mut graph = Graph::new();
    for file in &files {
        let Some(module) = module_of(file) else {
            continue;
        };
        let code = code(&std::fs::read_to_string(file).unwrap());
        let targets = graph.entry(module.clone()).or_default();
        for name in crate_paths(&code) {
            let target = reexports.get(&name).cloned().unwrap_or(name);
            if target != module && modules.contains(&target) {
                targets.insert(target);
            }
        }
    }
    graph
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Walk<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        found: Vec<Vec<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, node: &'g str) {
            let n = self.index.len();
            self.index.insert(node, n);
            self.low.insert(node, n);
            self.stack.push(node);
            for next in self.graph.get(node).into_iter().flatten() {
                let next = next.as_str();
                if !self.index.contains_key(next) {
                    self.visit(next);
                    self.low.insert(node, self.low[node].min(self.low[next]));
                } else if self.stack.contains(&next) {
                    self.low.insert(node, self.low[node].min(self.index[next]));
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(top) = self.stack.pop() {
                    component.push(top.to_owned());
                    if top == node {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !walk.index.contains_key(node.as_str()) {
            walk.visit(node);
        }
    }
    walk.found
}

fn mermaid(graph: &Graph) -> String {
    let mut out = String::from("graph TD\n");
    for (module, targets) in graph {
        if targets.is_empty() {
            out.push_str(&format!("  {module}\n"));
        }
        for target in targets {
            out.push_str(&format!("  {module} --> {target}\n"));
        }
    }
    out
}

#[test]
fn modules_form_no_cycle() {
    let graph = module_graph();
    println!("{}", mermaid(&graph));
    let cycles = cycles(&graph);
    assert!(
        cycles.is_empty(),
        "modules that depend on each other in a ring: {cycles:?}"
    );
}

#[test]
fn the_cycle_finder_finds_a_ring_and_accepts_a_dag() {
    let graph = |edges: &[(&str, &str)]| {
        let mut graph = Graph::new();
        for (from, to) in edges {
            graph
                .entry((*from).to_owned())
                .or_default()
                .insert((*to).to_owned());
            graph.entry((*to).to_owned()).or_default();
        }
        graph
    };
    assert!(cycles(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])).is_empty());
    assert_eq!(
        cycles(&graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")])),
        [["a", "b", "c"]]
    );
    assert_eq!(
        crate_paths("use crate::{a::B, c};\nlet x = crate::d::e(crate::F);"),
        ["F", "a", "c", "d"].map(String::from).into()
    );
}

#[test]
fn docs_show_the_current_graph() {
    let current = mermaid(&module_graph());
    let doc = std::fs::read_to_string(DOC).unwrap();
    let (before, rest) = doc
        .split_once(BEGIN)
        .expect("docs/modules.md has a mermaid block");
    let (shown, after) = rest.split_once(END).unwrap();
    if std::env::var_os("MODULE_GRAPH_UPDATE").is_some() {
        std::fs::write(DOC, format!("{before}{BEGIN}{current}{END}{after}")).unwrap();
        return;
    }
    assert_eq!(
        shown, current,
        "docs/modules.md is out of date: MODULE_GRAPH_UPDATE=1 cargo test --test module_graph"
    );
}
