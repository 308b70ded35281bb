// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title Mintable ERC-20 for tests and the devnet. Never deploy it to a real network.
contract TestToken is ERC20 {
    /// @notice A token named `name_` with symbol `symbol_` and 18 decimals.
    /// @param name_ token name
    /// @param symbol_ token symbol
    constructor(string memory name_, string memory symbol_) ERC20(name_, symbol_) {}

    /// @notice Mint `amount` to `to`; anyone may call it (test token).
    /// @param to recipient
    /// @param amount token units
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}
