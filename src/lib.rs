//! vramplan: will this transformer training run fit on my GPU?
//!
//! The pipeline, one stage per module: `config` (what the user runs) → `model` (the network as
//! a sequence of ops) → `sim` (the op-level memory simulator that yields a `Timeline`) →
//! `budget` (what the card has) → `plan` / `diagnose` / `probe` (front-ends) → `report`.

pub mod budget;
pub mod calibration;
pub mod cli;
pub mod commands;
pub mod config;
pub mod diagnose;
pub mod error;
pub mod input;
pub mod model;
pub mod plain;
pub mod plan;
pub mod probe;
pub mod report;
pub mod run;
pub mod sim;
pub mod terminal;
pub mod units;
