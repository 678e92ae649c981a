//! Multiboot modules (`--module PATH[,STRING]`): files loaded beside a Multiboot kernel, each
//! with a string the kernel reads as the module's command line.

use std::path::PathBuf;

use super::Error;

/// One module for a Multiboot kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleConfig {
    /// The file, loaded whole (a regular file, like the image).
    pub path: PathBuf,
    /// The module's string; the path as given when `None`, as GRUB passes the path its
    /// `module` command was given.
    pub string: Option<String>,
}

impl ModuleConfig {
    /// A module from `path` with the default string.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ModuleConfig {
            path: path.into(),
            string: None,
        }
    }

    /// The string the kernel sees.
    pub fn string(&self) -> String {
        match &self.string {
            Some(s) => s.clone(),
            None => self.path.to_string_lossy().into_owned(),
        }
    }

    /// A string with a NUL cannot be passed: the kernel reads up to the first one.
    pub(super) fn validate(&self) -> Result<(), Error> {
        if self.string().contains('\0') {
            return Err(Error::ModuleString(self.path.clone()));
        }
        Ok(())
    }
}

/// Parses `PATH[,STRING]`: the module's file, then (after the first comma) its string, which
/// may hold commas and spaces.
pub fn parse_module(s: &str) -> Result<ModuleConfig, Error> {
    let (path, string) = match s.split_once(',') {
        Some((path, string)) => (path, Some(string.to_string())),
        None => (s, None),
    };
    if path.is_empty() {
        return Err(Error::BadModule(s.to_string()));
    }
    Ok(ModuleConfig {
        path: path.into(),
        string,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_is_a_path_and_an_optional_string() {
        let m = parse_module("initrd.tar").unwrap();
        assert_eq!(m, ModuleConfig::new("initrd.tar"));
        assert_eq!(m.string(), "initrd.tar");
        let m = parse_module("/tmp/fs.img,root=fs ro, really").unwrap();
        assert_eq!(m.path, PathBuf::from("/tmp/fs.img"));
        assert_eq!(m.string(), "root=fs ro, really");
        assert_eq!(parse_module("a,").unwrap().string(), "");
        assert_eq!(parse_module(",x"), Err(Error::BadModule(",x".to_string())));
        let nul = ModuleConfig {
            path: "m".into(),
            string: Some("a\0b".into()),
        };
        assert!(nul.validate().is_err());
    }
}
