//! Forges hostile guests: components whose `describe` and `run` return byte
//! layouts written here by hand (in the canonical ABI of `cretok:node@0.1.0`),
//! so a test can hand the host what no well-behaved guest would: aliased
//! strings, huge lists, markup, endless loops, floods of functions.

use std::path::Path;

use wasm_encoder::{
    CodeSection, ConstExpr, DataSection, EntityType, ExportKind, ExportSection, Function,
    FunctionSection, GlobalSection, GlobalType, ImportSection, Instruction as I, MemorySection,
    MemoryType, Module, TypeSection, ValType,
};

/// A string in the guest's memory: where it is and how long.
#[derive(Debug, Clone, Copy)]
pub struct Str {
    pub ptr: u32,
    pub len: u32,
}

/// The kinds of `value-type`, by discriminant.
pub const STR: u8 = 0;

/// A port record.
pub struct Port {
    pub name: Str,
    pub kind: u8,
    pub description: Str,
}

/// The guest's initial memory, laid out by the test.
pub struct Image {
    bytes: Vec<u8>,
}

impl Default for Image {
    fn default() -> Self {
        Image { bytes: vec![0; 8] }
    }
}

impl Image {
    /// Reserves `size` zeroed bytes aligned to 8.
    pub fn alloc(&mut self, size: usize) -> u32 {
        let at = self.bytes.len().next_multiple_of(8);
        self.bytes.resize(at + size, 0);
        u32::try_from(at).unwrap()
    }

    /// `len` zero bytes (valid UTF-8: NULs), e.g. one buffer many strings alias.
    pub fn zeros(&mut self, len: usize) -> Str {
        let ptr = self.alloc(len);
        Str {
            ptr,
            len: len as u32,
        }
    }

    pub fn str(&mut self, s: &str) -> Str {
        let ptr = self.alloc(s.len());
        self.bytes[ptr as usize..][..s.len()].copy_from_slice(s.as_bytes());
        Str {
            ptr,
            len: s.len() as u32,
        }
    }

    fn put(&mut self, at: u32, bytes: &[u8]) {
        self.bytes[at as usize..][..bytes.len()].copy_from_slice(bytes);
    }

    fn put_str(&mut self, at: u32, s: Str) {
        self.put(at, &s.ptr.to_le_bytes());
        self.put(at + 4, &s.len.to_le_bytes());
    }

    /// A `list<port>` (48 bytes a record: name, kind, description, no default).
    pub fn ports(&mut self, ports: &[Port]) -> Str {
        let ptr = self.alloc(48 * ports.len());
        for (i, port) in ports.iter().enumerate() {
            let at = ptr + 48 * i as u32;
            self.put_str(at, port.name);
            self.put(at + 8, &[port.kind]);
            self.put_str(at + 12, port.description);
        }
        Str {
            ptr,
            len: ports.len() as u32,
        }
    }

    /// A `node-schema` record; returns its address.
    pub fn schema(
        &mut self,
        id: Str,
        display_name: Str,
        description: Str,
        inputs: Str,
        outputs: Str,
    ) -> u32 {
        let at = self.alloc(52);
        self.put_str(at, id);
        self.put_str(at + 8, display_name);
        let category = self.str("");
        self.put_str(at + 16, category);
        self.put_str(at + 24, description);
        self.put_str(at + 32, inputs);
        self.put_str(at + 40, outputs);
        at
    }

    /// `ok(list<named-value>)` of string values (24 bytes a named value);
    /// returns the result's address.
    pub fn string_outputs(&mut self, outputs: &[(Str, Str)]) -> u32 {
        let list = self.alloc(24 * outputs.len());
        for (i, (name, value)) in outputs.iter().enumerate() {
            let at = list + 24 * i as u32;
            self.put_str(at, *name);
            self.put(at + 8, &[STR]);
            self.put_str(at + 16, *value);
        }
        let result = self.alloc(24);
        self.put_str(
            result + 4,
            Str {
                ptr: list,
                len: outputs.len() as u32,
            },
        );
        result
    }

    /// A schema with no inputs and one STRING output `text`.
    pub fn text_node(&mut self, id: &str) -> u32 {
        let (id, name, empty) = (self.str(id), self.str("text"), self.str(""));
        let outputs = self.ports(&[Port {
            name,
            kind: STR,
            description: empty,
        }]);
        let inputs = self.ports(&[]);
        self.schema(id, empty, empty, inputs, outputs)
    }
}

/// What `run` does.
pub enum Run {
    /// Returns the result at this address.
    Return(u32),
    /// Loops until stopped.
    Spin,
    /// Logs `message` (at info) `times` times, then returns the result at `then`.
    Log { message: Str, times: u32, then: u32 },
}

/// A forged guest.
pub struct Guest {
    pub image: Image,
    /// The address of the schema `describe` returns.
    pub schema: u32,
    /// Whether `describe` loops until stopped instead.
    pub slow_describe: bool,
    pub run: Run,
    /// Extra functions that do nothing (a flood for the compiler).
    pub filler_functions: u32,
}

impl Guest {
    /// A node `id` whose `run` returns `text` as its output `text`.
    pub fn text(id: &str, text: &str) -> Guest {
        let mut image = Image::default();
        let schema = image.text_node(id);
        let (name, value) = (image.str("text"), image.str(text));
        let result = image.string_outputs(&[(name, value)]);
        Guest::new(image, schema, Run::Return(result))
    }

    pub fn new(image: Image, schema: u32, run: Run) -> Guest {
        Guest {
            image,
            schema,
            slow_describe: false,
            run,
            filler_functions: 0,
        }
    }

    /// The component's bytes.
    pub fn component(&self) -> Vec<u8> {
        let mut module = self.core_module();
        let mut resolve = wit_parser::Resolve::default();
        let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit/since_v0.1.0");
        let (package, _) = resolve.push_dir(&wit).unwrap();
        let world = resolve
            .select_world(&[package], Some("prompt-node"))
            .unwrap();
        wit_component::embed_component_metadata(
            &mut module,
            &resolve,
            world,
            wit_component::StringEncoding::UTF8,
        )
        .unwrap();
        wit_component::ComponentEncoder::default()
            .module(&module)
            .unwrap()
            .validate(true)
            .encode()
            .unwrap()
    }

    /// Writes the component to `dir/file`.
    pub fn write(&self, dir: &Path, file: &str) {
        std::fs::write(dir.join(file), self.component()).unwrap();
    }

    fn core_module(&self) -> Vec<u8> {
        let mut types = TypeSection::new();
        types.ty().function([ValType::I32; 3], []); // 0: log
        types.ty().function([], [ValType::I32]); // 1: describe
        types.ty().function([ValType::I32; 2], [ValType::I32]); // 2: run
        types.ty().function([ValType::I32; 4], [ValType::I32]); // 3: cabi_realloc
        types.ty().function([], []); // 4: filler
        let mut imports = ImportSection::new();
        imports.import("cretok:node/host@0.1.0", "log", EntityType::Function(0));
        let mut functions = FunctionSection::new();
        for ty in [1, 2, 3] {
            functions.function(ty);
        }
        for _ in 0..self.filler_functions {
            functions.function(4);
        }
        let pages = (self.image.bytes.len() as u64).div_ceil(65536) + 1;
        let mut memories = MemorySection::new();
        memories.memory(MemoryType {
            minimum: pages,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        let mut globals = GlobalSection::new();
        let heap = (self.image.bytes.len() as u64).next_multiple_of(8);
        globals.global(
            GlobalType {
                val_type: ValType::I32,
                mutable: true,
                shared: false,
            },
            &ConstExpr::i32_const(heap as i32),
        );
        let mut exports = ExportSection::new();
        exports.export("memory", ExportKind::Memory, 0);
        exports.export("cretok:node/node@0.1.0#describe", ExportKind::Func, 1);
        exports.export("cretok:node/node@0.1.0#run", ExportKind::Func, 2);
        exports.export("cabi_realloc", ExportKind::Func, 3);
        let mut code = CodeSection::new();
        code.function(&self.describe_body());
        code.function(&self.run_body());
        code.function(&realloc_body());
        for _ in 0..self.filler_functions {
            let mut filler = Function::new([]);
            filler.instruction(&I::End);
            code.function(&filler);
        }
        let mut data = DataSection::new();
        data.active(
            0,
            &ConstExpr::i32_const(0),
            self.image.bytes.iter().copied(),
        );
        let mut module = Module::new();
        module
            .section(&types)
            .section(&imports)
            .section(&functions)
            .section(&memories)
            .section(&globals)
            .section(&exports)
            .section(&code)
            .section(&data);
        module.finish()
    }

    fn describe_body(&self) -> Function {
        let mut f = Function::new([]);
        if self.slow_describe {
            spin(&mut f);
        }
        f.instruction(&I::I32Const(self.schema as i32));
        f.instruction(&I::End);
        f
    }

    fn run_body(&self) -> Function {
        let mut f = Function::new([(1, ValType::I32)]);
        match self.run {
            Run::Return(result) => {
                f.instruction(&I::I32Const(result as i32));
            }
            Run::Spin => spin(&mut f),
            Run::Log {
                message,
                times,
                then,
            } => {
                // local 2 counts the lines left.
                f.instruction(&I::I32Const(times as i32));
                f.instruction(&I::LocalSet(2));
                f.instruction(&I::Block(wasm_encoder::BlockType::Empty));
                f.instruction(&I::Loop(wasm_encoder::BlockType::Empty));
                f.instruction(&I::LocalGet(2));
                f.instruction(&I::I32Eqz);
                f.instruction(&I::BrIf(1));
                f.instruction(&I::I32Const(1));
                f.instruction(&I::I32Const(message.ptr as i32));
                f.instruction(&I::I32Const(message.len as i32));
                f.instruction(&I::Call(0));
                f.instruction(&I::LocalGet(2));
                f.instruction(&I::I32Const(1));
                f.instruction(&I::I32Sub);
                f.instruction(&I::LocalSet(2));
                f.instruction(&I::Br(0));
                f.instruction(&I::End);
                f.instruction(&I::End);
                f.instruction(&I::I32Const(then as i32));
            }
        }
        f.instruction(&I::End);
        f
    }
}

/// Loops forever (until the host stops it); leaves an `i32` for the type checker.
fn spin(f: &mut Function) {
    f.instruction(&I::Loop(wasm_encoder::BlockType::Empty));
    f.instruction(&I::Br(0));
    f.instruction(&I::End);
    f.instruction(&I::Unreachable);
}

/// A bump allocator: aligns the heap pointer to 8 and moves it by the new size.
fn realloc_body() -> Function {
    let mut f = Function::new([]);
    f.instruction(&I::GlobalGet(0));
    f.instruction(&I::I32Const(7));
    f.instruction(&I::I32Add);
    f.instruction(&I::I32Const(-8));
    f.instruction(&I::I32And);
    f.instruction(&I::GlobalSet(0));
    f.instruction(&I::GlobalGet(0));
    f.instruction(&I::GlobalGet(0));
    f.instruction(&I::LocalGet(3));
    f.instruction(&I::I32Add);
    f.instruction(&I::GlobalSet(0));
    f.instruction(&I::End);
    f
}
