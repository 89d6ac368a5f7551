//! `mount -t fuse.shelf` and fstab: mount(8) runs `mount.fuse.shelf ADDR DIR [-sfnv] [-o OPTS]`
//! (the binary answers to that name through a symlink, see the README), and
//! [`helper_args`] turns that into `shelf mount ADDR DIR -o OPTS` for the normal parser.

use std::ffi::OsString;

/// The arguments of `shelf mount` for a call as mount(8)'s helper:
/// `mount.fuse.shelf ADDR DIR [-sfnv] [-o OPTS] [-t TYPE]`.
pub fn helper_args(args: &[OsString]) -> Vec<OsString> {
    let mut out: Vec<OsString> = vec!["shelf".into(), "mount".into()];
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("-o") => {
                if let Some(v) = it.next() {
                    out.push("-o".into());
                    out.push(v.clone());
                }
            }
            Some("-t") | Some("-N") => {
                it.next();
            }
            Some(flag) if flag.starts_with('-') && flag.len() > 1 => {} // -s -f -n -v: sloppy, fake, no mtab, verbose
            _ => out.push(a.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_args_become_a_mount_command() {
        let args: Vec<OsString> = [
            "mount.fuse.shelf",
            "127.0.0.1:7878",
            "/mnt/x",
            "-n",
            "-o",
            "rw,allow_other",
        ]
        .iter()
        .map(Into::into)
        .collect();
        let got: Vec<String> = helper_args(&args)
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            got,
            [
                "shelf",
                "mount",
                "127.0.0.1:7878",
                "/mnt/x",
                "-o",
                "rw,allow_other"
            ]
        );
    }
}
