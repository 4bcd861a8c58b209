//! Where the candle runtime's storages go: every allocation and free becomes an `Engine`
//! alloc/release, named after the module being run (`layer3.mlp.c_fc.matmul`), with the
//! category and phase in effect. The engine is per thread, installed for one simulation.

use crate::sim::engine::Engine;
use crate::sim::timeline::{Category, Name, Phase, Shape};
use crate::sim::DType;
use std::cell::{Cell, RefCell};

/// The module whose code runs now: it names and categorises what is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    pub layer: Option<u32>,
    pub module: &'static str,
    pub category: Category,
}

impl Scope {
    pub const fn new(layer: Option<u32>, module: &'static str, category: Category) -> Scope {
        Scope {
            layer,
            module,
            category,
        }
    }
}

thread_local! {
    static ENGINE: RefCell<Option<Engine>> = const { RefCell::new(None) };
    static SCOPE: Cell<Scope> = const { Cell::new(Scope::new(None, "", Category::Other)) };
}

/// Install `engine` for this thread's simulation.
pub fn install(engine: Engine) {
    ENGINE.with(|e| *e.borrow_mut() = Some(engine));
    SCOPE.with(|s| s.set(Scope::new(None, "", Category::Other)));
}

/// Take the engine back once every tensor of the simulation is gone.
pub fn take() -> Option<Engine> {
    ENGINE.with(|e| e.borrow_mut().take())
}

/// Enter a module; returns the scope to restore.
pub fn enter(scope: Scope) -> Scope {
    SCOPE.with(|s| s.replace(scope))
}

pub fn scope() -> Scope {
    SCOPE.with(|s| s.get())
}

pub fn set_phase(phase: Phase) {
    ENGINE.with(|e| {
        if let Some(e) = e.borrow_mut().as_mut() {
            e.phase = phase;
        }
    });
}

/// A new storage of `dims` × `dtype`, named `what` in the current scope; None outside a
/// simulation.
pub fn alloc(what: &'static str, dims: &[usize], dtype: DType) -> Option<u32> {
    let sc = scope();
    let dims: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
    ENGINE.with(|e| {
        e.borrow_mut().as_mut().map(|e| {
            let name = Name::at(sc.layer, sc.module, what);
            e.alloc(name, Shape::new(&dims), dtype, sc.category)
        })
    })
}

/// The storage's last holder went.
pub fn free(id: u32) {
    ENGINE.with(|e| {
        if let Ok(mut e) = e.try_borrow_mut() {
            if let Some(e) = e.as_mut() {
                e.release(id);
            }
        }
    });
}
