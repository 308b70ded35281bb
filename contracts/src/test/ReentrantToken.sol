// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title Test-only hostile ERC-20 that calls back into a target during transfers.
/// @notice Used to prove the escrow's token-moving functions refuse reentrancy.
contract ReentrantToken is ERC20 {
    address public target;
    bytes public callbackData;

    /// @notice A hostile token.
    constructor() ERC20("reentrant", "RE") {}

    /// @notice Mint `amount` to `to`.
    /// @param to recipient
    /// @param amount token units
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Call `target` with `data` during every later transfer (empty data: off).
    /// @param target_ contract to call back
    /// @param data calldata of the callback
    function arm(address target_, bytes calldata data) external {
        target = target_;
        callbackData = data;
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        if (callbackData.length != 0) {
            (bool ok, bytes memory ret) = target.call(callbackData);
            if (!ok) {
                assembly ("memory-safe") {
                    revert(add(ret, 0x20), mload(ret))
                }
            }
        }
    }
}
