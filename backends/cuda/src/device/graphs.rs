//! CUDA graphs: capturing the stream's work, then launching and destroying
//! the instantiated graphs.

use cudarc::driver::CudaGraph;
use kiln_plugin_abi::plugin::{PluginError, PluginResult};
use kiln_plugin_abi::*;

use super::{CudaDevice, cuda_err};

impl CudaDevice {
    pub(super) fn capture_begin(&mut self) -> PluginResult<()> {
        self.bind()?;
        self.stream
            .begin_capture(cudarc::driver::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
            .map_err(cuda_err("begin graph capture"))?;
        self.capturing = true;
        Ok(())
    }

    pub(super) fn capture_end(&mut self) -> PluginResult<KilnGraph> {
        self.bind()?;
        self.capturing = false;
        let graph = self
            .stream
            .end_capture(cudarc::driver::sys::CUgraphInstantiate_flags(0))
            .map_err(cuda_err("end graph capture"))?
            .ok_or_else(|| PluginError::internal("graph capture recorded nothing"))?;
        Ok(KilnGraph(Box::into_raw(Box::new(graph)) as *mut _))
    }

    pub(super) fn graph_run(&mut self, graph: KilnGraph) -> PluginResult<()> {
        self.bind()?;
        // SAFETY: the handle came from `graph_end`.
        let g = unsafe { &*(graph.0 as *const CudaGraph) };
        g.launch().map_err(cuda_err("graph launch"))
    }

    pub(super) fn graph_free(&mut self, graph: KilnGraph) {
        if graph.0.is_null() || self.bind().is_err() {
            return;
        }
        // SAFETY: the handle came from `graph_end` and is destroyed once.
        drop(unsafe { Box::from_raw(graph.0 as *mut CudaGraph) });
    }
}
