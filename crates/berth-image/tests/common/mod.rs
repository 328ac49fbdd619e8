//! Helpers shared by the integration tests: archive builders (including
//! hostile entries the `tar` crate's safe API refuses to write), image
//! format builders, and store snapshots.
#![allow(dead_code)]

use berth_core::{ErrorCode, HasErrorCode, ImageRef};
use berth_image::{ImageError, ImageStore, ImageSummary, ImportProgress};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use tar::{EntryType, Header};

pub const HOST_ARCH: &str = if cfg!(target_arch = "x86_64") {
    "amd64"
} else if cfg!(target_arch = "aarch64") {
    "arm64"
} else {
    "unknown"
};

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn r(s: &str) -> ImageRef {
    ImageRef::parse(s).unwrap()
}

/// One tar entry, written byte for byte as described (no path checks).
#[derive(Clone, Debug)]
pub struct E {
    pub name: Vec<u8>,
    pub kind: EntryType,
    pub data: Vec<u8>,
    pub link: Option<Vec<u8>>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub dev: (u32, u32),
    pub pax: Vec<(String, Vec<u8>)>,
}

impl E {
    fn new(name: impl AsRef<[u8]>, kind: EntryType, mode: u32) -> E {
        E {
            name: name.as_ref().to_vec(),
            kind,
            data: Vec::new(),
            link: None,
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            dev: (0, 0),
            pax: Vec::new(),
        }
    }
    pub fn file(name: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> E {
        let mut e = E::new(name, EntryType::Regular, 0o644);
        e.data = data.as_ref().to_vec();
        e
    }
    pub fn dir(name: impl AsRef<[u8]>) -> E {
        E::new(name, EntryType::Directory, 0o755)
    }
    pub fn symlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> E {
        let mut e = E::new(name, EntryType::Symlink, 0o777);
        e.link = Some(target.as_ref().to_vec());
        e
    }
    pub fn hardlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> E {
        let mut e = E::new(name, EntryType::Link, 0o644);
        e.link = Some(target.as_ref().to_vec());
        e
    }
    pub fn chardev(name: impl AsRef<[u8]>, major: u32, minor: u32) -> E {
        let mut e = E::new(name, EntryType::Char, 0o666);
        e.dev = (major, minor);
        e
    }
    pub fn blockdev(name: impl AsRef<[u8]>, major: u32, minor: u32) -> E {
        let mut e = E::new(name, EntryType::Block, 0o660);
        e.dev = (major, minor);
        e
    }
    pub fn fifo(name: impl AsRef<[u8]>) -> E {
        E::new(name, EntryType::Fifo, 0o644)
    }
    pub fn kind(mut self, kind: EntryType) -> E {
        self.kind = kind;
        self
    }
    pub fn mode(mut self, mode: u32) -> E {
        self.mode = mode;
        self
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> E {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, mtime: u64) -> E {
        self.mtime = mtime;
        self
    }
    pub fn pax(mut self, key: &str, value: impl AsRef<[u8]>) -> E {
        self.pax.push((key.to_owned(), value.as_ref().to_vec()));
        self
    }
    pub fn xattr(self, key: &str, value: impl AsRef<[u8]>) -> E {
        self.pax(&format!("SCHILY.xattr.{key}"), value)
    }
}

fn raw_header(name: &[u8], kind: EntryType, size: u64) -> Header {
    let mut h = Header::new_gnu();
    assert!(name.len() <= 100, "test names must fit the header");
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(kind);
    h.set_size(size);
    h
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    // "<len> <key>=<value>\n" where len counts itself.
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut rec = format!("{len} {key}=").into_bytes();
    rec.extend_from_slice(value);
    rec.push(b'\n');
    rec
}

/// Builds a tar from entries, without the `tar` crate's path validation.
pub fn tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        if !e.pax.is_empty() {
            let data: Vec<u8> = e.pax.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
            let mut h = raw_header(b"PaxHeader", EntryType::XHeader, data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, &data[..]).unwrap();
        }
        let mut h = raw_header(&e.name, e.kind, e.data.len() as u64);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        if let Some(link) = &e.link {
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        }
        if matches!(e.kind, EntryType::Char | EntryType::Block) {
            h.set_device_major(e.dev.0).unwrap();
            h.set_device_minor(e.dev.1).unwrap();
        }
        h.set_cksum();
        b.append(&h, &e.data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).unwrap()
}

/// A small but realistic root file system.
pub fn base_rootfs() -> Vec<E> {
    vec![
        E::dir("./"),
        E::dir("./bin/"),
        E::file("./bin/sh", "#!shell").mode(0o755),
        E::dir("./etc/"),
        E::file("./etc/os-release", "ID=berth-test\n"),
        E::dir("./tmp/").mode(0o1777),
        E::symlink("./usr", "."),
    ]
}

pub fn image_config(diff_ids: &[String], cmd: &[&str]) -> Vec<u8> {
    let diff_ids: Vec<String> = diff_ids.iter().map(|d| format!("sha256:{d}")).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": HOST_ARCH,
        "os": "linux",
        "created": "2024-01-02T03:04:05Z",
        "config": {
            "Env": ["PATH=/bin", "GREETING=hello"],
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": cmd,
            "WorkingDir": "/srv",
            "User": "1000:1000",
            "ExposedPorts": {"80/tcp": {}},
            "Labels": {"org.example": "yes"},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "test"}],
    }))
    .unwrap()
}

/// A classic (Docker 1.10–24) `docker save` archive of uncompressed layers.
pub struct DockerArchive {
    pub tar: Vec<u8>,
    pub config_hex: String,
    pub diff_ids: Vec<String>,
}

pub fn docker_save(layers: &[Vec<u8>], tag: &str) -> DockerArchive {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    docker_save_with(layers, &image_config(&diff_ids, &["echo hi"]), tag)
}

pub fn docker_save_with(layers: &[Vec<u8>], config: &[u8], tag: &str) -> DockerArchive {
    let config_hex = sha256(config);
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let mut entries = vec![E::file(format!("{config_hex}.json"), config)];
    let mut layer_paths = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        // v1 ids are not content addresses; make them differ from digests.
        let id = sha256(format!("v1-id-{i}").as_bytes());
        entries.push(E::dir(format!("{id}/")));
        entries.push(E::file(format!("{id}/VERSION"), "1.0"));
        entries.push(E::file(format!("{id}/json"), "{}"));
        entries.push(E::file(format!("{id}/layer.tar"), layer));
        layer_paths.push(format!("{id}/layer.tar"));
    }
    let manifest = serde_json::json!([{
        "Config": format!("{config_hex}.json"),
        "RepoTags": [tag],
        "Layers": layer_paths,
    }]);
    entries.push(E::file("manifest.json", manifest.to_string()));
    entries.push(E::file("repositories", "{}"));
    DockerArchive {
        tar: tar(&entries),
        config_hex,
        diff_ids,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

impl Comp {
    pub fn apply(self, bytes: &[u8]) -> Vec<u8> {
        match self {
            Comp::None => bytes.to_vec(),
            Comp::Gzip => gzip(bytes),
            Comp::Zstd => zstd(bytes),
        }
    }
    pub fn media_type(self) -> &'static str {
        match self {
            Comp::None => "application/vnd.oci.image.layer.v1.tar",
            Comp::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Comp::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// The files of an OCI image layout (relative path → content).
pub struct OciLayout {
    pub files: BTreeMap<String, Vec<u8>>,
    pub manifest_hex: String,
    pub config_hex: String,
    pub layer_hexes: Vec<String>,
}

impl OciLayout {
    pub fn add_blob(&mut self, bytes: &[u8]) -> String {
        let hex = sha256(bytes);
        self.files
            .insert(format!("blobs/sha256/{hex}"), bytes.to_vec());
        hex
    }

    pub fn write_dir(&self, dir: &Path) {
        for (name, bytes) in &self.files {
            let path = dir.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, bytes).unwrap();
        }
    }

    /// Packed the way `tar -C layout -cf x.tar .` would.
    pub fn to_tar(&self) -> Vec<u8> {
        let mut entries = vec![E::dir("./"), E::dir("./blobs/"), E::dir("./blobs/sha256/")];
        for (name, bytes) in &self.files {
            entries.push(E::file(format!("./{name}"), bytes));
        }
        tar(&entries)
    }
}

/// An OCI layout with one image of `layers` (uncompressed tars, compressed
/// as asked), tagged `ref_name` in index.json.
pub fn oci_layout(layers: &[(Vec<u8>, Comp)], ref_name: &str) -> OciLayout {
    let diff_ids: Vec<String> = layers.iter().map(|(l, _)| sha256(l)).collect();
    let config = image_config(&diff_ids, &["oci"]);
    oci_layout_with(layers, &config, ref_name)
}

pub fn oci_layout_with(layers: &[(Vec<u8>, Comp)], config: &[u8], ref_name: &str) -> OciLayout {
    let mut layout = OciLayout {
        files: BTreeMap::new(),
        manifest_hex: String::new(),
        config_hex: String::new(),
        layer_hexes: Vec::new(),
    };
    layout.files.insert(
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    );
    let mut layer_descs = Vec::new();
    for (layer, comp) in layers {
        let blob = comp.apply(layer);
        let hex = layout.add_blob(&blob);
        layer_descs.push(serde_json::json!({
            "mediaType": comp.media_type(), "digest": format!("sha256:{hex}"), "size": blob.len()
        }));
        layout.layer_hexes.push(hex);
    }
    layout.config_hex = layout.add_blob(config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", layout.config_hex), "size": config.len()},
        "layers": layer_descs,
    }))
    .unwrap();
    layout.manifest_hex = layout.add_blob(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", layout.manifest_hex),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": ref_name},
        }],
    });
    layout
        .files
        .insert("index.json".into(), serde_json::to_vec(&index).unwrap());
    layout
}

/// A test directory with a store in it and a place for sources.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub store: ImageStore,
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&tmp.path().join("data")).unwrap();
        Env { tmp, store }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, bytes).unwrap();
        path
    }

    pub fn import(&self, reference: &str, source: &Path) -> Result<ImageSummary, ImageError> {
        self.store.import(&r(reference), source, &mut |_| {})
    }

    pub fn import_bytes(&self, reference: &str, bytes: &[u8]) -> Result<ImageSummary, ImageError> {
        let path = self.write(&format!("source-{}.bin", sha256(bytes)), bytes);
        self.import(reference, &path)
    }

    /// Imports, recording progress events.
    pub fn import_logged(
        &self,
        reference: &str,
        source: &Path,
    ) -> (ImageSummary, Vec<ImportProgress>) {
        let mut events = Vec::new();
        let summary = self
            .store
            .import(&r(reference), source, &mut |e| events.push(e))
            .unwrap();
        (summary, events)
    }

    pub fn layers_dir(&self) -> PathBuf {
        self.store.root().join("layers")
    }

    pub fn layer_count(&self) -> usize {
        fs::read_dir(self.layers_dir()).unwrap().count()
    }

    /// The only unpacked layer directory of a one-layer image.
    pub fn single_layer(&self, reference: &str) -> PathBuf {
        let resolved = self.store.resolve(&r(reference)).unwrap();
        assert_eq!(resolved.layers.len(), 1);
        resolved.layers[0].clone()
    }

    /// Imports `bytes`, expecting a refusal as invalid_archive that leaves
    /// the store exactly as it was; returns the error message.
    pub fn expect_refused(&self, bytes: &[u8]) -> String {
        let before = snapshot(self.store.root());
        let err = self.import_bytes("hostile:latest", bytes).unwrap_err();
        assert_eq!(
            err.code(),
            ErrorCode::InvalidArchive,
            "unexpected error: {err}"
        );
        assert_eq!(
            snapshot(self.store.root()),
            before,
            "store changed by a refused import"
        );
        err.to_string()
    }
}

/// A line per file under `root`: path, type, mode, owner, size, link
/// target or content digest, xattrs. Equal snapshots mean equal trees.
pub fn snapshot(root: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        let ft = meta.file_type();
        let what = if ft.is_dir() {
            let mut children: Vec<PathBuf> = fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            children.sort();
            stack.extend(children);
            "dir".to_owned()
        } else if ft.is_symlink() {
            format!("link->{}", fs::read_link(&path).unwrap().display())
        } else if ft.is_file() {
            format!("file:{}", sha256(&fs::read(&path).unwrap()))
        } else if ft.is_char_device() {
            format!("chr:{}", meta.rdev())
        } else {
            format!("other:{:o}", meta.mode())
        };
        lines.push(format!(
            "{rel} {what} {:o} {}:{} {}",
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid(),
            if ft.is_file() { meta.len() } else { 0 }
        ));
    }
    lines.sort();
    lines
}

/// Every file and directory under `dir` (empty for an untouched sandbox).
pub fn tree(dir: &Path) -> Vec<String> {
    snapshot(dir)
        .into_iter()
        .filter(|l| !l.starts_with(' '))
        .collect()
}

pub fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(path, name, &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(_) => None,
    }
}
