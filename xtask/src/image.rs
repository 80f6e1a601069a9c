//! `cargo xtask image`: the agent as an OCI image, written straight to an OCI image layout
//! (no container engine, no registry, no network). One uncompressed layer holds
//! /usr/bin/enforcer, the shared libraries it links, a root-only /etc/passwd and
//! /etc/group, and the agent's empty directories; no shell, no package manager. Every
//! header carries a fixed time, owner and mode, so the same binary gives the same digests.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::{
    build::{self, exec, workspace_root},
    elf,
};

/// The image's name; Kubernetes reads `enforcer:dev` as `docker.io/library/enforcer:dev`.
pub const NAME: &str = "enforcer";
/// The tag `deploy/kustomization.yaml` points at.
pub const DEFAULT_TAG: &str = "dev";
/// The layout directory and (with `.tar`) its archive, under the output directory.
const LAYOUT: &str = "enforcer-oci";

/// The time of every file, the config and the history entry (the Unix epoch): a rebuild
/// of the same binary yields the same bytes.
const EPOCH: u64 = 0;
const EPOCH_RFC3339: &str = "1970-01-01T00:00:00Z";

const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

#[derive(clap::Args)]
pub struct Options {
    /// Output directory (default: target/image): the layout goes to `enforcer-oci/`, its
    /// archive to `enforcer-oci.tar`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Tag of the image in the layout (its `org.opencontainers.image.ref.name`).
    #[arg(long, default_value = DEFAULT_TAG)]
    tag: String,
}

/// A written image.
pub struct Image {
    /// The OCI image layout directory.
    pub layout: PathBuf,
    /// A tar archive of the layout (`oci-archive:`, `ctr images import`, `docker load`).
    pub archive: PathBuf,
    pub tag: String,
    /// `sha256:…` of the manifest: the image's digest.
    pub digest: String,
    /// Every file of the layout, relative to it.
    pub files: Vec<String>,
}

/// Builds the agent (the release binary the VM tests run) and writes its image.
pub fn run(options: &Options) -> anyhow::Result<()> {
    let agent = build::agent()?;
    let out = options.out.clone().unwrap_or_else(|| workspace_root().join("target/image"));
    let image = build(&agent, &out, &options.tag)?;
    println!("image {NAME}:{} {}", image.tag, image.digest);
    println!("layout  {}  (oci:{}:{})", image.layout.display(), image.layout.display(), image.tag);
    println!("archive {}  (oci-archive:{}:{})", image.archive.display(), image.archive.display(), image.tag);
    Ok(())
}

/// Writes the image of `agent` to `out/enforcer-oci/` and `out/enforcer-oci.tar`,
/// replacing what was there.
pub fn build(agent: &Path, out: &Path, tag: &str) -> anyhow::Result<Image> {
    let blobs = blobs(agent, tag)?;
    let layout = out.join(LAYOUT);
    let _ = fs::remove_dir_all(&layout);
    fs::create_dir_all(layout.join("blobs/sha256"))
        .with_context(|| format!("creating {}", layout.display()))?;
    for (name, bytes) in &blobs.files {
        fs::write(layout.join(name), bytes).with_context(|| format!("writing {name}"))?;
    }
    let archive = out.join(format!("{LAYOUT}.tar"));
    let mut tar = Tar::default();
    tar.dir("blobs", 0o755)?;
    tar.dir("blobs/sha256", 0o755)?;
    for (name, bytes) in &blobs.files {
        tar.file(name, 0o644, bytes)?;
    }
    fs::write(&archive, tar.finish()?).with_context(|| format!("writing {}", archive.display()))?;
    Ok(Image {
        layout,
        archive,
        tag: tag.to_owned(),
        digest: blobs.manifest_digest,
        files: blobs.files.into_iter().map(|(name, _)| name).collect(),
    })
}

/// The layout's files (relative name, contents) and the manifest's digest.
struct Blobs {
    files: Vec<(String, Vec<u8>)>,
    manifest_digest: String,
}

fn blobs(agent: &Path, tag: &str) -> anyhow::Result<Blobs> {
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => bail!("no OCI architecture name known for {other}"),
    };
    let layer = layer(agent)?;
    let layer_digest = sha256(&layer);
    let config = json!({
        "created": EPOCH_RFC3339,
        "architecture": architecture,
        "os": "linux",
        "config": {
            "User": "0:0",
            "Env": ["PATH=/usr/bin"],
            // Arguments come from whoever runs it (the DaemonSet: `agent --kubernetes …`).
            "Entrypoint": ["/usr/bin/enforcer"],
            "WorkingDir": "/",
            "Labels": labels(),
        },
        // The layer is not compressed, so its digest is also its diff ID.
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        "history": [{ "created": EPOCH_RFC3339, "created_by": "cargo xtask image" }],
    });
    let config = serde_json::to_vec(&config)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": descriptor(MEDIA_CONFIG, &config),
        "layers": [descriptor(MEDIA_LAYER, &layer)],
        "annotations": labels(),
    });
    let manifest = serde_json::to_vec(&manifest)?;
    let manifest_digest = sha256(&manifest);
    let mut entry = descriptor(MEDIA_MANIFEST, &manifest);
    entry["platform"] = json!({ "architecture": architecture, "os": "linux" });
    entry["annotations"] = json!({
        // What skopeo and umoci call the image in the layout (`oci:DIR:TAG`).
        "org.opencontainers.image.ref.name": tag,
        // What containerd (`ctr images import`, kind, docker load) names it: the name
        // Kubernetes resolves `enforcer:TAG` to, so the DaemonSet finds it without a pull.
        "io.containerd.image.name": format!("docker.io/library/{NAME}:{tag}"),
    });
    let index = json!({ "schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [entry] });

    let mut files = vec![
        ("oci-layout".to_owned(), serde_json::to_vec(&json!({ "imageLayoutVersion": "1.0.0" }))?),
        ("index.json".to_owned(), serde_json::to_vec(&index)?),
    ];
    for blob in [manifest, config, layer] {
        files.push((blob_path(&sha256(&blob)), blob));
    }
    Ok(Blobs { files, manifest_digest })
}

fn labels() -> Value {
    json!({
        "org.opencontainers.image.title": NAME,
        "org.opencontainers.image.description": "enforcer agent: in-kernel exec, file and network enforcement per workload identity",
        "org.opencontainers.image.version": env!("CARGO_PKG_VERSION"),
        "org.opencontainers.image.licenses": env!("CARGO_PKG_LICENSE"),
    })
}

/// What the layer holds besides the binary and its libraries.
enum Entry {
    Dir(u32),
    File(u32, Vec<u8>),
}

/// The root filesystem as one tar: directories before their contents, in path order.
fn layer(agent: &Path) -> anyhow::Result<Vec<u8>> {
    let mut entries: BTreeMap<PathBuf, Entry> = BTreeMap::new();
    let mut file = |path: &str, mode: u32, bytes: Vec<u8>| {
        entries.insert(PathBuf::from(path), Entry::File(mode, bytes));
    };
    let read = |path: &Path| fs::read(path).with_context(|| format!("reading {}", path.display()));
    file("usr/bin/enforcer", 0o755, read(agent)?);
    if elf::is_elf(agent) {
        for lib in elf::shared_libraries(agent)? {
            let inside = lib.strip_prefix("/").unwrap_or(&lib).to_string_lossy().into_owned();
            // `fs::read` follows the symlinks (ld.so is one) to the library's bytes.
            file(&inside, 0o755, read(&lib)?);
        }
    }
    file("etc/passwd", 0o644, b"root:x:0:0:root:/:/sbin/nologin\n".to_vec());
    file("etc/group", 0o644, b"root:x:0:\n".to_vec());
    file("etc/nsswitch.conf", 0o644, b"passwd: files\ngroup: files\nhosts: files dns\n".to_vec());
    for (dir, mode) in [
        ("tmp", 0o1777),
        ("run", 0o755),
        ("run/enforcer", 0o755),
        ("var/lib/enforcer", 0o700),
        ("var/log/enforcer", 0o755),
    ] {
        entries.insert(PathBuf::from(dir), Entry::Dir(mode));
    }
    let parents: Vec<PathBuf> = entries
        .keys()
        .flat_map(|p| p.ancestors().skip(1))
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .collect();
    for parent in parents {
        entries.entry(parent).or_insert(Entry::Dir(0o755));
    }

    let mut tar = Tar::default();
    for (path, entry) in &entries {
        let path = path.to_str().context("non-UTF-8 path in the image")?;
        match entry {
            Entry::Dir(mode) => tar.dir(path, *mode)?,
            Entry::File(mode, bytes) => tar.file(path, *mode, bytes)?,
        }
    }
    tar.finish()
}

/// A tar archive in memory whose headers carry only what is given (root-owned, [`EPOCH`]).
struct Tar(tar::Builder<Vec<u8>>);

impl Default for Tar {
    fn default() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }
}

impl Tar {
    fn header(kind: tar::EntryType, mode: u32, size: u64) -> anyhow::Result<tar::Header> {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(EPOCH);
        header.set_uid(0);
        header.set_gid(0);
        header.set_username("root")?;
        header.set_groupname("root")?;
        Ok(header)
    }

    fn dir(&mut self, path: &str, mode: u32) -> anyhow::Result<()> {
        let mut header = Self::header(tar::EntryType::Directory, mode, 0)?;
        self.0.append_data(&mut header, format!("{path}/"), std::io::empty())?;
        Ok(())
    }

    fn file(&mut self, path: &str, mode: u32, bytes: &[u8]) -> anyhow::Result<()> {
        let mut header = Self::header(tar::EntryType::Regular, mode, bytes.len() as u64)?;
        self.0.append_data(&mut header, path, bytes)?;
        Ok(())
    }

    fn finish(self) -> anyhow::Result<Vec<u8>> {
        Ok(self.0.into_inner()?)
    }
}

fn sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256:");
    for byte in digest {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": sha256(bytes), "size": bytes.len() })
}

/// Reads the image back with the standard tools, as a user or a cluster would: skopeo
/// (layout and archive) and umoci, which unpacks it into a runtime bundle.
pub fn check(image: &Image) -> anyhow::Result<()> {
    for reference in [
        format!("oci:{}:{}", image.layout.display(), image.tag),
        format!("oci-archive:{}:{}", image.archive.display(), image.tag),
    ] {
        let output = Command::new("skopeo")
            .args(["inspect", &reference])
            .output()
            .context("running skopeo (apt-get install skopeo; scripts/bootstrap.sh does)")?;
        if !output.status.success() {
            bail!("skopeo inspect {reference} failed:\n{}", String::from_utf8_lossy(&output.stderr));
        }
        let inspect: Value =
            serde_json::from_slice(&output.stdout).context("skopeo inspect printed no JSON")?;
        if inspect["Digest"] != image.digest.as_str() || inspect["Os"] != "linux" {
            bail!("skopeo inspect {reference} reads another image: {inspect}");
        }
    }
    let bundle = image.layout.with_file_name(format!("{LAYOUT}-bundle"));
    let _ = fs::remove_dir_all(&bundle);
    exec(
        Command::new("umoci")
            .args(["unpack", "--image", &format!("{}:{}", image.layout.display(), image.tag)])
            .arg(&bundle),
    )
    .context("umoci unpack (apt-get install umoci; scripts/bootstrap.sh does)")?;
    let config: Value = serde_json::from_slice(&fs::read(bundle.join("config.json"))?)?;
    if config["process"]["args"][0] != "/usr/bin/enforcer" {
        bail!("the unpacked bundle does not run /usr/bin/enforcer: {}", config["process"]);
    }
    let rootfs = bundle.join("rootfs");
    for (path, present) in [("usr/bin/enforcer", true), ("etc/passwd", true), ("bin/sh", false)] {
        if rootfs.join(path).exists() != present {
            bail!("/{path} is {} the unpacked image", if present { "missing from" } else { "in" });
        }
    }
    let _ = fs::remove_dir_all(&bundle);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for the agent: not an ELF file, so no libraries are looked up.
    fn fake_agent(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("xtask-image-{name}-{}", std::process::id()));
        fs::write(&path, b"#!not a shell\n").unwrap();
        path
    }

    fn layer_paths(layer: &[u8]) -> Vec<(String, u32)> {
        let mut archive = tar::Archive::new(layer);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().to_string_lossy().into_owned(), e.header().mode().unwrap())
            })
            .collect()
    }

    #[test]
    fn the_same_binary_gives_the_same_digests() {
        let agent = fake_agent("same");
        let (a, b) = (blobs(&agent, "dev").unwrap(), blobs(&agent, "dev").unwrap());
        assert_eq!(a.manifest_digest, b.manifest_digest);
        assert_eq!(a.files, b.files);
        fs::write(&agent, b"another build").unwrap();
        assert_ne!(blobs(&agent, "dev").unwrap().manifest_digest, a.manifest_digest);
        fs::remove_file(agent).unwrap();
    }

    #[test]
    fn the_layout_names_its_blobs_by_digest_and_its_image_by_tag() {
        let agent = fake_agent("layout");
        let blobs = blobs(&agent, "v9").unwrap();
        fs::remove_file(agent).unwrap();
        for (name, bytes) in &blobs.files {
            if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                assert_eq!(sha256(bytes), format!("sha256:{hex}"));
            }
        }
        let file = |name: &str| -> Value {
            let (_, bytes) = blobs.files.iter().find(|(n, _)| n == name).unwrap();
            serde_json::from_slice(bytes).unwrap()
        };
        let index = file("index.json");
        let entry = &index["manifests"][0];
        assert_eq!(entry["digest"], blobs.manifest_digest.as_str());
        assert_eq!(entry["annotations"]["org.opencontainers.image.ref.name"], "v9");
        assert_eq!(entry["annotations"]["io.containerd.image.name"], "docker.io/library/enforcer:v9");
        let manifest = file(&blob_path(&blobs.manifest_digest));
        let config = file(&blob_path(manifest["config"]["digest"].as_str().unwrap()));
        assert_eq!(config["config"]["Entrypoint"], json!(["/usr/bin/enforcer"]));
        assert_eq!(config["rootfs"]["diff_ids"][0], manifest["layers"][0]["digest"]);
    }

    #[test]
    fn the_root_filesystem_has_the_agent_and_no_shell() {
        let agent = fake_agent("rootfs");
        let layer = layer(&agent).unwrap();
        fs::remove_file(agent).unwrap();
        let paths = layer_paths(&layer);
        let names: Vec<&str> = paths.iter().map(|(p, _)| p.as_str()).collect();
        for want in
            ["usr/", "usr/bin/", "usr/bin/enforcer", "etc/passwd", "etc/group", "tmp/", "var/lib/enforcer/"]
        {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        assert!(!names.iter().any(|n| n.starts_with("bin/")), "{names:?}");
        // Parents come before what they hold, as unpackers expect.
        assert!(
            names.iter().position(|n| *n == "usr/").unwrap()
                < names.iter().position(|n| *n == "usr/bin/").unwrap()
        );
        assert!(paths.contains(&("tmp/".to_owned(), 0o1777)), "{paths:?}");
        assert!(paths.contains(&("usr/bin/enforcer".to_owned(), 0o755)), "{paths:?}");
    }
}
