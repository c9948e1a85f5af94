//! Rewriting grub.cfg for `--cmdline` and `--module`.
//!
//! Only the first menu entry's `multiboot2` line and the `module2` lines that follow it
//! (up to the entry's closing `}`) are touched; everything else is kept byte for byte.

/// Returns `cfg` with `cmdline`'s words appended to the first `multiboot2` line and a
/// `module2 /boot/NAME NAME` line for each of `modules` that the entry does not load
/// yet (a module already loaded as `/boot/NAME` keeps its line: its file is replaced).
/// New module lines go after the entry's last `module2` line, in the order given.
pub fn rewrite(cfg: &str, cmdline: Option<&str>, modules: &[&str]) -> Result<String, String> {
    let mut lines: Vec<String> = cfg.lines().map(str::to_string).collect();
    let kernel = lines
        .iter()
        .position(|l| first_word(l) == Some("multiboot2"))
        .ok_or("grub.cfg has no multiboot2 line")?;

    if let Some(cmdline) = cmdline {
        let words: Vec<String> = cmdline.split_whitespace().map(quote).collect();
        if !words.is_empty() {
            let line = &mut lines[kernel];
            let trimmed_len = line.trim_end().len();
            line.truncate(trimmed_len);
            line.push(' ');
            line.push_str(&words.join(" "));
        }
    }

    // The entry's body: from the multiboot2 line to the closing brace (or the end).
    let end = lines[kernel + 1..]
        .iter()
        .position(|l| l.trim_start().starts_with('}'))
        .map_or(lines.len(), |i| kernel + 1 + i);
    let mut last = (kernel + 1..end)
        .rev()
        .find(|&i| first_word(&lines[i]) == Some("module2"))
        .unwrap_or(kernel);
    let indent: String = lines[last]
        .chars()
        .take_while(|c| c.is_whitespace())
        .collect();

    for name in modules {
        let path = format!("/boot/{name}");
        let loaded = lines[kernel + 1..=last].iter().any(|l| {
            first_word(l) == Some("module2") && l.split_whitespace().nth(1) == Some(&path)
        });
        if !loaded {
            last += 1;
            lines.insert(last, format!("{indent}module2 {path} {name}"));
        }
    }

    let mut out = lines.join("\n");
    if cfg.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

fn first_word(line: &str) -> Option<&str> {
    line.split_whitespace().next()
}

/// Quotes one command-line word for GRUB's script parser, which strips the quotes
/// again before handing the words to the kernel. Plain words stay as they are.
pub fn quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_=.,/:+@%".contains(c);
    if word.chars().all(plain) {
        word.to_string()
    } else if !word.contains('\'') {
        format!("'{word}'")
    } else {
        let mut s = String::from("\"");
        for c in word.chars() {
            if matches!(c, '"' | '\\' | '$') {
                s.push('\\');
            }
            s.push(c);
        }
        s.push('"');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "set timeout=0
set default=0
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
menuentry \"Mica\" {
    multiboot2 /boot/kernel
    module2 /boot/init init
    boot
}
";

    #[test]
    fn nothing_to_do_leaves_the_file_unchanged() {
        assert_eq!(rewrite(CFG, None, &[]).unwrap(), CFG);
    }

    #[test]
    fn cmdline_words_are_appended_to_the_multiboot2_line() {
        let out = rewrite(CFG, Some("log=debug  ktest"), &[]).unwrap();
        assert!(out.contains("\n    multiboot2 /boot/kernel log=debug ktest\n"));
        assert_eq!(out.lines().count(), CFG.lines().count());
    }

    #[test]
    fn existing_kernel_arguments_are_kept() {
        let cfg = "menuentry x {\n  multiboot2 /boot/kernel quiet  \n}\n";
        let out = rewrite(cfg, Some("ktest"), &[]).unwrap();
        assert_eq!(
            out,
            "menuentry x {\n  multiboot2 /boot/kernel quiet ktest\n}\n"
        );
    }

    #[test]
    fn a_new_module_goes_after_the_last_module2_line_with_its_indentation() {
        let out = rewrite(CFG, None, &["hello", "world"]).unwrap();
        assert!(out.contains(
            "    module2 /boot/init init\n    module2 /boot/hello hello\n    module2 /boot/world world\n    boot\n"
        ));
    }

    #[test]
    fn a_module_that_is_already_loaded_keeps_its_single_line() {
        let out = rewrite(CFG, None, &["init"]).unwrap();
        assert_eq!(out, CFG);
    }

    #[test]
    fn without_module2_lines_modules_follow_the_multiboot2_line() {
        let cfg = "menuentry x {\n\tmultiboot2 /boot/kernel\n\tboot\n}";
        let out = rewrite(cfg, Some("ktest"), &["init"]).unwrap();
        assert_eq!(
            out,
            "menuentry x {\n\tmultiboot2 /boot/kernel ktest\n\tmodule2 /boot/init init\n\tboot\n}"
        );
    }

    #[test]
    fn module2_lines_of_later_entries_are_ignored() {
        let cfg =
            "menuentry a {\n multiboot2 /boot/kernel\n}\nmenuentry b {\n module2 /boot/x x\n}\n";
        let out = rewrite(cfg, None, &["m"]).unwrap();
        assert_eq!(
            out,
            "menuentry a {\n multiboot2 /boot/kernel\n module2 /boot/m m\n}\nmenuentry b {\n module2 /boot/x x\n}\n"
        );
    }

    #[test]
    fn a_config_without_multiboot2_is_an_error() {
        assert!(rewrite("menuentry x {\n linux /vmlinuz\n}\n", Some("a"), &[]).is_err());
    }

    #[test]
    fn plain_words_are_not_quoted() {
        assert_eq!(quote("init=bench"), "init=bench");
        assert_eq!(quote("log=debug,sched:trace"), "log=debug,sched:trace");
    }

    #[test]
    fn words_with_grub_metacharacters_are_single_quoted() {
        assert_eq!(quote("a;b"), "'a;b'");
        assert_eq!(quote("$x"), "'$x'");
        assert_eq!(quote("{x}"), "'{x}'");
    }

    #[test]
    fn words_with_single_quotes_are_double_quoted_with_escapes() {
        assert_eq!(quote("it's"), "\"it's\"");
        assert_eq!(quote("a'\"$\\"), "\"a'\\\"\\$\\\\\"");
    }

    #[test]
    fn the_shipped_grub_cfg_loads_exactly_the_modules_abi_names() {
        // grub.cfg cannot import a Rust constant: this holds it to the list
        // build.rs, init and the kernel use.
        let cfg = include_str!("../grub/grub.cfg");
        let loaded: Vec<(&str, &str)> = cfg
            .lines()
            .filter(|l| first_word(l) == Some("module2"))
            .map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (w[1], w[2])
            })
            .collect();
        let want: Vec<String> = abi::bootinfo::modules::ALL
            .iter()
            .map(|m| format!("/boot/{m}"))
            .collect();
        assert_eq!(loaded.len(), want.len(), "{loaded:?}");
        for ((path, name), (want_path, want_name)) in loaded
            .iter()
            .zip(want.iter().zip(abi::bootinfo::modules::ALL))
        {
            assert_eq!((*path, *name), (want_path.as_str(), want_name));
        }
    }
}
