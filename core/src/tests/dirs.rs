//! Directory listings handed out in pages (`dirs.rs`).

use super::*;

#[test]
fn readdirplus_counts_only_accepted_entries_and_resumes() {
    let f = fixture();
    for i in 0..10 {
        fs::write(f.dir.path().join(format!("e{i}")), vec![0; i]).expect("seed");
    }
    let dh = f.core.opendir(ROOT_INO).expect("opendir");
    let mut all = Vec::new();
    let mut offset = 0;
    loop {
        let mut page = Collect {
            room: Some(4),
            ..Default::default()
        };
        f.core
            .readdir(dh, offset, true, &mut page)
            .expect("readdir");
        let Some(last) = page.entries.last() else {
            break;
        };
        offset = last.1;
        all.extend(page.entries);
    }
    f.core.releasedir(dh);
    let names: Vec<String> = all
        .iter()
        .map(|e| String::from_utf8_lossy(&e.2).into_owned())
        .collect();
    let mut want = vec![".".to_string(), "..".to_string()];
    want.extend((0..10).map(|i| format!("e{i}")));
    assert_eq!(names, want);
    for (ino, _, name, attr) in &all[2..] {
        assert_eq!(
            f.core.inodes.lookups(*ino),
            Some(1),
            "{:?} looked up once",
            name
        );
        let i: usize = String::from_utf8_lossy(&name[1..]).parse().expect("index");
        assert_eq!(attr.size, i as u64, "attributes come with the listing");
    }
}
