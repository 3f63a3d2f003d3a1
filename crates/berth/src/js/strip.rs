//! TypeScript to JavaScript, as a bundler does it: oxc parses the file, its transformer
//! erases the types (`import type`, annotations, `declare` fields, `override`), and its
//! code generator prints JavaScript with a source map, so that an error QuickJS reports
//! in the printed code can name the line and column of the file as written.
//!
//! Types are erased, never checked: a type error is the TypeScript compiler's to report.

use std::path::{Path, PathBuf};

use oxc_allocator::Allocator;
use oxc_ast::ast::{
    ExportAllDeclaration, ExportFromDeclaration, Expression, ImportDeclaration, ImportExpression,
};
use oxc_ast_visit::{walk, Visit};
use oxc_codegen::{Codegen, CodegenOptions};
use oxc_parser::Parser;
use oxc_semantic::SemanticBuilder;
use oxc_span::SourceType;
use oxc_transformer::{TransformOptions, Transformer};

use super::{ScriptError, SourcePlace};

/// A file as QuickJS runs it.
pub(crate) struct Stripped {
    pub code: String,
    /// What it imports by a fixed name: `import … from "x"`, `export … from "x"`, and
    /// `import("x")` with the name written out (one computed at run time is not known).
    pub imports: Vec<String>,
    /// From the printed code back to the file as written.
    map: Option<oxc_sourcemap::SourceMap<'static>>,
}

impl Stripped {
    /// The place in the file as written of 1-based `line` and `column` of the printed
    /// code; `None` if the printed code there comes from no place in the file.
    pub fn original(&self, line: u32, column: u32) -> Option<(u32, u32)> {
        let map = self.map.as_ref()?;
        let table = map.generate_lookup_table();
        let token = map.lookup_token(&table, line.checked_sub(1)?, column.saturating_sub(1))?;
        Some((token.get_src_line() + 1, token.get_src_col() + 1))
    }
}

/// Strips the TypeScript of `text`, read from `path` (`.ts`, `.mts`, `.js` or `.mjs`: the
/// extension says which); a syntax error names the place and the parser's message.
pub(crate) fn strip(path: &Path, text: &str) -> Result<Stripped, ScriptError> {
    let allocator = Allocator::default();
    let source_type = match path.extension().and_then(|e| e.to_str()) {
        Some("js" | "mjs") => SourceType::mjs(),
        _ => SourceType::ts(),
    };
    let parsed = Parser::new(&allocator, text, source_type).parse();
    if let Some(error) = parsed.diagnostics.errors().next() {
        return Err(syntax_error(path, text, error));
    }
    if parsed.panicked {
        return Err(ScriptError::Syntax {
            at: SourcePlace::file(path),
            message: "the parser gave up on this file".into(),
        });
    }
    let mut program = parsed.program;
    let semantic = SemanticBuilder::new()
        .with_check_syntax_error(true)
        .build(&program);
    if let Some(error) = semantic.diagnostics.errors().next() {
        return Err(syntax_error(path, text, error));
    }
    let scoping = semantic.semantic.into_scoping();
    let transformed = Transformer::new(&allocator, path, &TransformOptions::default())
        .build_with_scoping(scoping, &mut program);
    if let Some(error) = transformed.diagnostics.errors().next() {
        return Err(syntax_error(path, text, error));
    }
    // After the types are erased: an import used only as a type is gone by then.
    let mut imports = Imports::default();
    imports.visit_program(&program);
    let options = CodegenOptions {
        source_map_path: Some(PathBuf::from(path)),
        ..CodegenOptions::default()
    };
    let printed = Codegen::new().with_options(options).build(&program);
    Ok(Stripped {
        code: printed.code,
        imports: imports.0,
        map: printed.map.map(|m| m.into_owned()),
    })
}

/// The module names a file imports, as written.
#[derive(Default)]
struct Imports(Vec<String>);

impl<'a> Visit<'a> for Imports {
    // `import type` and `export type … from` are erased: they import nothing.
    fn visit_import_declaration(&mut self, it: &ImportDeclaration<'a>) {
        if !it.import_kind.is_type() {
            self.0.push(it.source.value.to_string());
        }
    }

    fn visit_export_from_declaration(&mut self, it: &ExportFromDeclaration<'a>) {
        if !it.export_kind.is_type() {
            self.0.push(it.source.value.to_string());
        }
    }

    fn visit_export_all_declaration(&mut self, it: &ExportAllDeclaration<'a>) {
        if !it.export_kind.is_type() {
            self.0.push(it.source.value.to_string());
        }
    }

    fn visit_import_expression(&mut self, it: &ImportExpression<'a>) {
        if let Expression::StringLiteral(source) = &it.source {
            self.0.push(source.value.to_string());
        }
        walk::walk_import_expression(self, it);
    }
}

fn syntax_error(path: &Path, text: &str, error: &oxc_diagnostics::OxcDiagnostic) -> ScriptError {
    let offset = error
        .labels
        .first()
        .map(|label| label.offset())
        .unwrap_or(0);
    let (line, column) = line_column(text, offset as usize);
    let mut message = error.message.to_string();
    if let Some(help) = &error.help {
        message.push_str("; ");
        message.push_str(help);
    }
    ScriptError::Syntax {
        at: SourcePlace {
            path: path.to_path_buf(),
            line,
            column,
        },
        message,
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (u32, u32) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}
