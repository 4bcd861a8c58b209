//! How text output is laid out for the terminal: the width, and tables that fit it. Shared by
//! `check`'s report and `suggest`'s plan, which are siblings: neither imports the other for it.

/// The width tables are laid out to: `COLUMNS` when set (shells export it, and a script can
/// choose), else the terminal's own width when stdout is one, else 80 columns.
pub fn terminal_width() -> u16 {
    let from_env = std::env::var("COLUMNS")
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
        .filter(|&w| w >= 20);
    from_env
        .or_else(|| comfy_table::Table::new().width())
        .unwrap_or(80)
}

/// A table in the report's style that wraps its cells to fit [`terminal_width`].
pub fn fitted_table(preset: comfy_table::TableStyle) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_style(preset);
    t.set_content_arrangement(comfy_table::ContentArrangement::Dynamic);
    t.set_width(terminal_width());
    t
}
