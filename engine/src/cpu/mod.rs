//! The CPU reference device on ndarray and matrixmultiply.

use std::sync::{Arc, RwLock};

/// The CPU backend (stateless; threading comes from matrixmultiply and rayon).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuBackend;

/// A CPU buffer: a shared, lockable `Vec<f32>`. The lock exists only for the optimiser's
/// in-place update; every other op reads.
#[derive(Clone, Debug)]
pub struct CpuBuffer(pub(crate) Arc<RwLock<Vec<f32>>>);

use crate::backend::*;
use crate::Result;

impl Backend for CpuBackend {
    type Buffer = CpuBuffer;
    fn name(&self) -> String {
        "cpu".into()
    }
    fn from_host(&self, data: &[f32]) -> Result<CpuBuffer> {
        Ok(CpuBuffer(Arc::new(RwLock::new(data.to_vec()))))
    }
    fn to_host(&self, x: &CpuBuffer) -> Result<Vec<f32>> {
        Ok(x.0.read().unwrap().clone())
    }
    fn full(&self, len: usize, value: f32) -> Result<CpuBuffer> {
        Ok(CpuBuffer(Arc::new(RwLock::new(vec![value; len]))))
    }
    fn unary(&self, _op: UnaryOp, _x: &CpuBuffer, _len: usize) -> Result<CpuBuffer> {
        todo!()
    }
    fn binary(
        &self,
        _op: BinaryOp,
        _a: &CpuBuffer,
        _as: &[usize],
        _b: &CpuBuffer,
        _bs: &[usize],
        _os: &[usize],
    ) -> Result<CpuBuffer> {
        todo!()
    }
    fn reduce(
        &self,
        _op: ReduceOp,
        _x: &CpuBuffer,
        _shape: &[usize],
        _axes: &[usize],
    ) -> Result<CpuBuffer> {
        todo!()
    }
    fn matmul(&self, _a: &CpuBuffer, _b: &CpuBuffer, _dims: MatmulDims) -> Result<CpuBuffer> {
        todo!()
    }
    fn conv2d(
        &self,
        _x: &CpuBuffer,
        _w: &CpuBuffer,
        _bias: Option<&CpuBuffer>,
        _dims: Conv2dDims,
    ) -> Result<CpuBuffer> {
        todo!()
    }
    fn conv2d_backward_input(
        &self,
        _dy: &CpuBuffer,
        _w: &CpuBuffer,
        _dims: Conv2dDims,
    ) -> Result<CpuBuffer> {
        todo!()
    }
    fn conv2d_backward_weight(
        &self,
        _x: &CpuBuffer,
        _dy: &CpuBuffer,
        _dims: Conv2dDims,
    ) -> Result<CpuBuffer> {
        todo!()
    }
    fn permute(&self, _x: &CpuBuffer, _shape: &[usize], _perm: &[usize]) -> Result<CpuBuffer> {
        todo!()
    }
    fn slice(
        &self,
        _x: &CpuBuffer,
        _shape: &[usize],
        _axis: usize,
        _start: usize,
        _len: usize,
    ) -> Result<CpuBuffer> {
        todo!()
    }
    fn concat(&self, _parts: &[(&CpuBuffer, &[usize])], _axis: usize) -> Result<CpuBuffer> {
        todo!()
    }
    fn gather(
        &self,
        _x: &CpuBuffer,
        _shape: &[usize],
        _axis: usize,
        _indices: &[usize],
    ) -> Result<CpuBuffer> {
        todo!()
    }
    fn random(&self, _len: usize, _dist: Distribution, _seed: u64) -> Result<CpuBuffer> {
        todo!()
    }
    fn adam_update(
        &self,
        _p: &CpuBuffer,
        _g: &CpuBuffer,
        _m: &CpuBuffer,
        _v: &CpuBuffer,
        _len: usize,
        _step: &AdamStep,
    ) -> Result<()> {
        todo!()
    }
}
